"""Fixtures for the Python runtime's own tests: real instance processes on port 0, a descriptor
server standing in for control's ``/admin/stacks`` (the only part of control an instance talks
to), fresh databases on the engines ``scripts/test`` starts, and the Rust runtime beside ours
for the cross-runtime tests.

Engines come from ``STACKLAB_TEST_*``; a missing one skips its tests, saying so, unless
``STACKLAB_REQUIRE_SERVICES=1``, where it fails them (MongoDB aside, as in the Rust tests).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RUNTIME = HERE.parent
REPO = RUNTIME.parent.parent
sys.path.insert(0, str(RUNTIME))

START_DEADLINE = 30.0
STOP_DEADLINE = 15.0


def require_env(var: str) -> str:
    """The engine's address, or a skip (a failure under STACKLAB_REQUIRE_SERVICES=1)."""
    value = os.environ.get(var, "")
    if value:
        return value
    if os.environ.get("STACKLAB_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{var} is not set, and STACKLAB_REQUIRE_SERVICES=1")
    pytest.skip(f"{var} is not set")


def mongo_url() -> str:
    """The MongoDB server to test against. As in the Rust tests (helpers.rs ``mongo_url``), its
    absence skips MongoDB even under CI until scripts/test starts one of its own."""
    url = os.environ.get("STACKLAB_TEST_MONGO_URL", "")
    if not url:
        pytest.skip("MongoDB is tested only when STACKLAB_TEST_MONGO_URL is set (no server is installed here)")
    return url


def new_code() -> str:
    return secrets.token_hex(16)


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


# --- the descriptor server ----------------------------------------------------------------------


class Control:
    """``GET /admin/stacks/{code}`` and ``PUT /admin/stacks/{code}/cache-policy`` as control
    answers them, behind a bearer credential."""

    def __init__(self, credential: str):
        self.credential = credential
        self.stacks: dict[str, dict] = {}
        self.fetches: dict[str, int] = {}
        self.policies: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        control = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def _send(self, status: int, body: dict):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _authorized(self) -> bool:
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer "):
                    self._send(401, {"error": {"code": "unauthorized", "message": "no credential"}})
                    return False
                if auth[7:] != control.credential:
                    self._send(403, {"error": {"code": "forbidden", "message": "wrong credential"}})
                    return False
                return True

            def do_GET(self):
                parts = self.path.strip("/").split("/")
                if not self._authorized():
                    return
                if len(parts) == 3 and parts[:2] == ["admin", "stacks"]:
                    with control.lock:
                        control.fetches[parts[2]] = control.fetches.get(parts[2], 0) + 1
                        d = control.stacks.get(parts[2])
                    if d is None:
                        return self._send(404, {"error": {"code": "session_expired", "message": "gone"}})
                    return self._send(200, d)
                self._send(404, {"error": {"code": "not_found", "message": self.path}})

            def do_PUT(self):
                parts = self.path.strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if not self._authorized():
                    return
                if len(parts) == 4 and parts[:2] == ["admin", "stacks"] and parts[3] == "cache-policy":
                    with control.lock:
                        control.policies.append((parts[2], json.loads(body)["policy"]))
                    return self._send(200, {"ok": True})
                self._send(404, {"error": {"code": "not_found", "message": self.path}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, d: dict) -> dict:
        with self.lock:
            self.stacks[d["session"]] = d
        return d

    def remove(self, code: str) -> None:
        with self.lock:
            self.stacks.pop(code, None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def control():
    c = Control(secrets.token_urlsafe(24))
    yield c
    c.close()


# --- instances ------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self):
        try:
            return json.loads(self.raw)
        except ValueError:
            return None

    @property
    def code(self) -> str | None:
        b = self.body
        return b.get("error", {}).get("code") if isinstance(b, dict) else None

    @property
    def field(self) -> str | None:
        b = self.body
        return b.get("error", {}).get("field") if isinstance(b, dict) else None


@dataclass
class Instance:
    proc: subprocess.Popen
    url: str
    port: int
    stderr_lines: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60.0) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def stop(self) -> int:
        """Closes stdin (control going away) and waits for the exit."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                return self.proc.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_DEADLINE)
                raise AssertionError("the instance did not exit within the deadline after stdin closed") from None
        return self.proc.returncode


def _read_first_line(proc: subprocess.Popen, deadline: float) -> str:
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(proc.stdout.readline().decode()), daemon=True)
    t.start()
    t.join(deadline)
    if not got:
        proc.kill()
        raise AssertionError(f"no first line within {deadline} s")
    return got[0]


def start_process(argv: list[str], credential: str | None, control_url: str, config: Path | None = None,
                  env: dict | None = None) -> Instance:
    cmd = [*argv, "--addr", "127.0.0.1:0", "--control-url", control_url, "--token-stdin"]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env or os.environ.copy())
    if credential is not None:
        proc.stdin.write(credential.encode() + b"\n")
        proc.stdin.flush()
    inst = Instance(proc, "", 0)
    threading.Thread(target=lambda: inst.stderr_lines.extend(
        line.decode(errors="replace") for line in proc.stderr), daemon=True).start()
    line = _read_first_line(proc, START_DEADLINE)
    prefix = "stacklab backend on http://"
    if not line.startswith(prefix):
        proc.kill()
        proc.wait()
        raise AssertionError(f"first line {line!r}; stderr: {''.join(inst.stderr_lines)}")
    addr = line[len(prefix):].strip()
    inst.url = f"http://{addr}"
    inst.port = int(addr.rsplit(":", 1)[1])
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return inst


PYTHON_START = [str(RUNTIME / "bin" / "stacklab-python")]


@pytest.fixture
def start_python(control, tmp_path):
    """Starts Python instances (``config`` is the [backend] section as TOML text)."""
    started: list[Instance] = []

    def start(config: str | None = None) -> Instance:
        path = None
        if config is not None:
            path = tmp_path / f"stacklab-{len(started)}.toml"
            path.write_text(f"[backend]\n{config}\n")
        inst = start_process(PYTHON_START, control.credential, control.url, path)
        started.append(inst)
        return inst

    yield start
    for inst in started:
        if inst.proc.poll() is None:
            inst.stop()


@pytest.fixture
def python(start_python) -> Instance:
    return start_python("bcrypt_cost = 4")


def rust_binary() -> Path:
    explicit = os.environ.get("STACKLAB_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return Path(target) / "debug" / "stacklab"


@pytest.fixture
def rust(control, tmp_path) -> Instance:
    """The Rust runtime's instance on the same descriptor server."""
    binary = rust_binary()
    if not binary.exists():
        if os.environ.get("STACKLAB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{binary} is missing (cargo build -p stacklab --bin stacklab), and STACKLAB_REQUIRE_SERVICES=1")
        pytest.skip(f"{binary} is missing: cargo build -p stacklab --bin stacklab")
    config = tmp_path / "rust.toml"
    config.write_text("[backend]\nbcrypt_cost = 4\n")
    env = {k: v for k, v in os.environ.items() if k != "STACKLAB_ADMIN_TOKEN"}
    env.setdefault("RUST_LOG", "warn")
    inst = start_process([str(binary), "backend"], control.credential, control.url, config, env)
    yield inst
    inst.stop()


# --- a session's stack ---------------------------------------------------------------------------


class Api:
    """Requests of one session to one instance."""

    def __init__(self, inst: Instance, code: str):
        self.inst = inst
        self.code = code

    def call(self, method: str, path: str, body: object = None, headers: dict | None = None) -> Response:
        h = {"x-stacklab-session": self.code, **(headers or {})}
        raw = None
        if body is not None:
            raw = json.dumps(body).encode()
            h.setdefault("content-type", "application/json")
        return self.inst.request(method, path, raw, h)

    def raw(self, method: str, path: str, content_type: str | None, raw: bytes) -> Response:
        h = {"x-stacklab-session": self.code}
        if content_type is not None:
            h["content-type"] = content_type
        return self.inst.request(method, path, raw, h)

    def graphql(self, query: str, variables: dict | None = None) -> Response:
        return self.call("POST", "/graphql", {"query": query, "variables": variables or {}})


def database_spec(kind: str, tmp_path: Path, cleanups: list) -> dict:
    """A fresh, empty database of ``kind`` (sqlite, postgres, mysql, mongodb)."""
    name = "stacklab_py_" + secrets.token_hex(6)
    if kind == "sqlite":
        return {"engine": "sqlite", "url": f"sqlite://{tmp_path / (name + '.db')}?mode=rwc"}
    if kind == "postgres":
        import psycopg

        admin = require_env("STACKLAB_TEST_POSTGRES_URL")
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        url = _with_db(admin, name)

        def drop():
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        cleanups.append(drop)
        return {"engine": "postgres", "url": url}
    if kind == "mysql":
        import pymysql

        admin = require_env("STACKLAB_TEST_MYSQL_URL")
        u = urllib.parse.urlsplit(admin)

        def connect():
            return pymysql.connect(host=u.hostname, port=u.port or 3306, user=urllib.parse.unquote(u.username or ""),
                                   password=urllib.parse.unquote(u.password or ""), autocommit=True)

        with connect() as c, c.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")

        def drop():
            with connect() as c, c.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")

        cleanups.append(drop)
        return {"engine": "mysql", "url": _with_db(admin, name)}
    if kind == "mongodb":
        url = mongo_url()

        def drop():
            import pymongo

            with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as c:
                c.drop_database(name)

        cleanups.append(drop)
        return {"engine": "mongodb", "url": url, "database": name}
    raise AssertionError(kind)


def _with_db(url: str, db: str) -> str:
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + db, u.query, ""))


def cache_spec(kind: str, shared: bool = True) -> dict:
    prefix = "s:" + secrets.token_hex(6) + ":"
    if kind in ("memory", "none"):
        return {"engine": kind, "url": "", "key_prefix": prefix, "policy": "",
                "max_bytes": 1024 * 1024 if kind == "memory" else 0, "ttl_ms": 60_000, "shared": False}
    if kind == "redis":
        return {"engine": "redis", "url": require_env("STACKLAB_TEST_REDIS_URL"), "key_prefix": prefix,
                "policy": "", "max_bytes": 0, "ttl_ms": 60_000, "shared": shared}
    if kind == "memcached":
        return {"engine": "memcached", "url": require_env("STACKLAB_TEST_MEMCACHED_ADDR"), "key_prefix": prefix,
                "policy": "", "max_bytes": 0, "ttl_ms": 60_000, "shared": shared}
    raise AssertionError(kind)


@pytest.fixture
def cleanups():
    fns: list = []
    yield fns
    for fn in reversed(fns):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a failed clean-up is reported, not fatal
            print(f"clean-up failed: {e}", file=sys.stderr)


@pytest.fixture
def make_stack(control, tmp_path, cleanups):
    """Registers a new session's descriptor with the descriptor server and returns it."""

    def make(db: str = "sqlite", cache: str = "memory", write_policy: str = "cache-aside",
             password_storage: str = "plaintext", encryption: str = "none", **cache_overrides) -> dict:
        spec = cache_spec(cache)
        spec.update(cache_overrides)
        return control.add({
            "session": new_code(), "runtime": "python", "protocol": "rest",
            "database": database_spec(db, tmp_path, cleanups), "cache": spec,
            "write_policy": write_policy, "password_storage": password_storage, "encryption": encryption,
            "encryption_key": new_key(), "pepper": "pepper-" + secrets.token_hex(8),
        })

    return make


def wait_until(what: str, check, deadline: float = 10.0, every: float = 0.05):
    """Polls ``check`` until it is truthy; fails naming ``what`` at the deadline."""
    end = time.monotonic() + deadline
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline} s")
        time.sleep(every)
