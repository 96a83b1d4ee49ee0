"""The instance process (CONTRACT.md §1): arguments, the credential on stdin, waitress, shutdown.

One process with a pool of threads, never several worker processes: the in-process cache of a
session must be one per instance. The first stdout line says where it listens; stdin reaching
EOF (control went away), SIGTERM or SIGINT stop it: the listener closes, requests in flight get
up to ``DRAIN_S`` to finish, the sessions' connections close, and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

DRAIN_S = 10.0
THREADS = 16
CONNECTION_LIMIT = 256
# Bodies up to this size are read whole and answered by the app (a JSON 413 past
# max_body_bytes, after the client finished sending); larger ones are refused by waitress as
# soon as their length is known — with the same JSON body (see JsonErrorTask).
WAITRESS_MAX_BODY = 16 << 20

log = logging.getLogger("stacklab_python")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="stacklab-python", description="One instance of stacklab's Python runtime.")
    p.add_argument("--addr", help="listen on HOST:PORT (port 0 picks one); overrides backend.addr")
    p.add_argument("--control-url", help="control's admin URL; overrides backend.control_url")
    p.add_argument("--token-stdin", action="store_true",
                   help="read the runtime credential from the first line of stdin, and exit when stdin closes")
    p.add_argument("--config", help="a stacklab TOML file; its [backend] section is read")
    p.add_argument("--check", action="store_true", help="exit 0 when every dependency imports")
    return p.parse_args(argv)


def check() -> int:
    """Imports everything an instance needs; prints what is missing."""
    try:
        import argon2  # noqa: F401
        import bcrypt  # noqa: F401
        import cryptography  # noqa: F401
        import flask  # noqa: F401
        import graphql  # noqa: F401
        import psycopg  # noqa: F401
        import pymemcache  # noqa: F401
        import pymongo  # noqa: F401
        import pymysql  # noqa: F401
        import redis  # noqa: F401
        import waitress  # noqa: F401

        from . import app, gql  # noqa: F401
    except ImportError as e:
        print(f"the Python runtime's package {e.name or e} is missing; run backends/python/setup.sh", file=sys.stderr)
        return 1
    print("ok")
    return 0


def _json_error_task():
    """waitress's own error responses (a malformed request, a body past WAITRESS_MAX_BODY) in
    the API's JSON error body rather than waitress's text."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    from .errors import ApiError

    class JsonErrorTask(ErrorTask):
        def execute(self):
            e = self.request.error
            if e.code == 413:
                err = ApiError.too_large(WAITRESS_MAX_BODY)
            else:
                err = ApiError(e.code, "bad_request", f"the request could not be read ({e.reason}); send it again")
            body = err.json()
            self.status = f"{e.code} {e.reason}"
            self.response_headers.extend([
                ("Content-Type", "application/json"), ("Connection", "close"),
                ("Server-Timing", "backend;dur=0.000, cache;dur=0.000, db;dur=0.000"),
            ])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonChannel


class InFlight:
    """WSGI middleware counting requests in flight, so shutdown can wait for them."""

    def __init__(self, app):
        self._app = app
        self._n = 0
        self._cond = threading.Condition()

    def __call__(self, environ, start_response):
        with self._cond:
            self._n += 1
        try:
            result = self._app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return _Closing(result, self._done)

    def _done(self) -> None:
        with self._cond:
            self._n -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


class _Closing:
    """The app's response iterable, counted as in flight until the server closes it."""

    def __init__(self, result, done):
        self._result = result
        self._done = done

    def __iter__(self):
        return iter(self._result)

    def close(self):
        try:
            if hasattr(self._result, "close"):
                self._result.close()
        finally:
            self._done()


def _flushed(server, timeout: float) -> bool:
    """Waits until every connection has sent what it holds. A request counts as done
    (:class:`InFlight`) when waitress closes its response, which can come before waitress's
    loop has written the answer out: exiting then cut it (seen under load, the client got no
    answer)."""
    from waitress.channel import HTTPChannel

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [
            ch for ch in list(server._map.values())
            if isinstance(ch, HTTPChannel) and (ch.requests or ch.total_outbufs_len)
        ]
        if not busy:
            return True
        time.sleep(0.01)
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.check:
        return check()
    logging.basicConfig(
        stream=sys.stderr, level=os.environ.get("STACKLAB_PYTHON_LOG", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from . import config

    try:
        cfg = config.load(args.config)
        addr = config.parse_addr(args.addr) if args.addr else cfg.addr
    except config.ConfigError as e:
        for key, message in e.problems:
            print(f"{key}: {message}", file=sys.stderr)
        return 1
    except ValueError:
        print(f"--addr: `{args.addr}` is not `host:port`", file=sys.stderr)
        return 1
    control_url = args.control_url or cfg.control_url
    if not args.token_stdin:
        print("stacklab-python takes its credential only from stdin: pass --token-stdin", file=sys.stderr)
        return 1
    line = sys.stdin.buffer.readline()
    credential = line.decode("utf-8", errors="replace").strip()
    if not credential:
        print("--token-stdin: no token on the first line of stdin", file=sys.stderr)
        return 1

    import waitress

    from . import guard
    from .app import Runtime, create_app
    from .sessions import ControlStacks, Sessions

    sessions = Sessions(ControlStacks(control_url, credential), cfg.backend)
    guard.configure(cfg.backend.limits)
    app = InFlight(create_app(Runtime(cfg.backend, sessions, credential)))
    try:
        server = waitress.create_server(
            app, host=addr[0], port=addr[1], threads=THREADS, connection_limit=CONNECTION_LIMIT,
            max_request_body_size=WAITRESS_MAX_BODY, channel_timeout=60, ident="stacklab-python",
            clear_untrusted_proxy_headers=False,
        )
    except OSError as e:
        print(f"cannot bind the backend on {addr[0]}:{addr[1]}: {e.strerror}", file=sys.stderr)
        return 1
    server.channel_class = _json_error_task()
    host, port = server.socket.getsockname()[:2]
    stop = threading.Event()

    # Before the ready line: a signal sent right after it must find this handler, not
    # Python's default action (which kills the process with requests in flight).
    def on_signal(signum, _frame):
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    threading.Thread(target=server.run, name="waitress", daemon=True).start()
    print(f"stacklab backend on http://{host}:{port}", flush=True)

    def watch_stdin():
        # The parent holds our stdin open for as long as it lives.
        while sys.stdin.buffer.read1(4096):
            pass
        log.info("stdin closed: stopping")
        stop.set()

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()

    def sweep():
        interval = min(30.0, max(0.05, cfg.backend.session_idle_s / 4))
        while not stop.wait(interval):
            try:
                sessions.sweep()
            except Exception:  # noqa: BLE001 - the sweeper must outlive one bad close
                log.exception("session sweep failed")

    threading.Thread(target=sweep, name="sweeper", daemon=True).start()

    while not stop.wait(1.0):
        pass

    # Stop accepting (in waitress's own loop thread), let requests in flight finish, close.
    from waitress import wasyncore

    closed = threading.Event()

    def stop_listening():
        server.accepting = False
        wasyncore.dispatcher.close(server)
        closed.set()

    server.trigger.pull_trigger(stop_listening)
    closed.wait(2.0)
    if not app.wait_idle(DRAIN_S):
        log.warning("requests still running after %.0f s: stopping anyway", DRAIN_S)
    elif not _flushed(server, 2.0):
        log.warning("answers still unsent after 2 s: stopping anyway")
    sessions.close_all()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
