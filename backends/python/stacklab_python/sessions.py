"""Which sessions this instance serves, and their open connections (CONTRACT.md §3, §14).

Many sessions share one instance. Each request names its session (``x-stacklab-session``, set
by the proxy); the instance resolves the session's stack descriptor from control, opens the
session's store and cache once, and keeps them while the session is used. The set is bounded
(``max_sessions``, least recently used closed first), idle sessions are closed by a sweep, and a
descriptor is fetched again after ``descriptor_ttl`` so a session control has ended stops being
served even if nobody told this instance.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from .config import BackendConfig
from .errors import ApiError
from .service import Session, log_id, open_session

log = logging.getLogger(__name__)

CONTROL_TIMEOUT = 5.0


class ControlStacks:
    """Descriptors from control: ``GET {base}/admin/stacks/{code}`` with the runtime credential."""

    def __init__(self, base: str, credential: str):
        self._base = base.rstrip("/")
        self._credential = credential
        # Never through a proxy from the environment: control is on the loopback, and the
        # credential must not travel anywhere else.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"ControlStacks({self._base})"

    def _request(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self._base}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._credential}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        return self._opener.open(req, timeout=CONTROL_TIMEOUT)

    def fetch(self, code: str) -> dict | None:
        """The session's descriptor, or None when control does not know the session."""
        try:
            with self._request("GET", f"/admin/stacks/{code}") as res:
                raw = res.read()
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                return None
            raise ApiError.unavailable("control", f"control answered {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ApiError.unavailable("control", f"cannot reach control: {reason}") from None
        try:
            d = json.loads(raw)
            check_descriptor(d)
        except (ValueError, TypeError, KeyError) as e:
            raise ApiError.unavailable("control", f"bad stack descriptor: {e}") from None
        return d

    def cache_policy_changed(self, code: str, policy: str) -> None:
        """Best effort: the session keeps its policy on another instance and after a restart."""
        try:
            with self._request("PUT", f"/admin/stacks/{code}/cache-policy", {"policy": policy}):
                pass
        except urllib.error.HTTPError as e:
            log.warning("control did not record the cache policy change: status %s", e.code)
        except (urllib.error.URLError, OSError) as e:
            log.warning("cannot tell control about the cache policy change: %s", getattr(e, "reason", e))


def check_descriptor(d: object) -> None:
    """Raises when ``d`` is not a descriptor (types/src/stack.rs); fills nothing in."""
    if not isinstance(d, dict):
        raise TypeError("not an object")
    if not isinstance(d["session"], str):
        raise TypeError("session is not a string")
    db, cache = d["database"], d["cache"]
    if db.get("engine") not in ("sqlite", "postgres", "mysql", "mongodb") or not isinstance(db.get("url"), str):
        raise ValueError("database.engine or database.url")
    if cache.get("engine") not in ("memory", "redis", "memcached", "none"):
        raise ValueError("cache.engine")


def same_stack(open_d: dict, fetched: dict) -> bool:
    """The same stack, but for a cache policy changed through this API (the open cache already
    runs the new one): the session's connections and cache contents are kept."""
    a = json.loads(json.dumps(open_d))
    b = json.loads(json.dumps(fetched))
    for d in (a, b):
        d.get("cache", {}).pop("policy", None)
    return a == b


class _Open:
    __slots__ = ("session", "fetched")

    def __init__(self, session: Session, fetched: float):
        self.session = session
        self.fetched = fetched


class Sessions:
    """The open sessions of this instance."""

    def __init__(self, source, config: BackendConfig, clock: Callable[[], float] = time.monotonic):
        self._source = source
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        # Opening is rare and slow (connects, schema): one at a time per session, so a burst of
        # first requests for one session opens it once.
        self._opening: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"Sessions(open={len(self)})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def _fresh(self, code: str) -> Session | None:
        with self._lock:
            o = self._open.get(code)
            if o is not None and self._clock() - o.fetched < self._config.descriptor_ttl_s:
                o.session.touch()
                return o.session
        return None

    def get(self, code: str) -> Session:
        """The session's open stack, opening it if needed."""
        s = self._fresh(code)
        if s is not None:
            return s
        with self._lock:
            gate = self._opening.setdefault(code, threading.Lock())
        with gate:
            s = self._fresh(code)
            if s is not None:
                return s
            try:
                return self._refresh(code)
            except BaseException:
                with self._lock:  # no lock left behind for a session that is not open
                    if code not in self._open:
                        self._opening.pop(code, None)
                raise

    def _refresh(self, code: str) -> Session:
        descriptor = self._source.fetch(code)
        if descriptor is None:
            self.close(code)
            raise ApiError.session_expired()
        with self._lock:
            o = self._open.get(code)
            if o is not None and same_stack(o.session.descriptor, descriptor):
                o.fetched = self._clock()
                o.session.touch()
                return o.session
        self.close(code, keep_gate=True)
        session = open_session(descriptor, self._config.limits, self._config.db_connections_per_session)
        evicted = None
        with self._lock:
            if len(self._open) >= self._config.max_sessions:
                victim = min(self._open, key=lambda k: self._open[k].session.last_used)
                evicted = self._open.pop(victim).session
                self._opening.pop(victim, None)
            self._open[code] = _Open(session, self._clock())
        if evicted is not None:
            log.info("session %s closed: more than %d sessions open", log_id(evicted.code), self._config.max_sessions)
            evicted.close()
        return session

    def cache_policy_changed(self, code: str, policy: str) -> None:
        self._source.cache_policy_changed(code, policy)

    def close(self, code: str, keep_gate: bool = False) -> None:
        """Closes a session's connections (it ended, or its stack changed)."""
        with self._lock:
            o = self._open.pop(code, None)
            if not keep_gate:
                self._opening.pop(code, None)
        if o is not None:
            o.session.close()

    def sweep(self) -> None:
        """Closes sessions idle longer than ``session_idle``."""
        now = time.monotonic()
        with self._lock:
            stale = [k for k, o in self._open.items() if now - o.session.last_used > self._config.session_idle_s]
        for code in stale:
            log.info("session %s closed: idle", log_id(code))
            self.close(code)

    def close_all(self) -> None:
        with self._lock:
            codes = list(self._open)
        for code in codes:
            self.close(code)
