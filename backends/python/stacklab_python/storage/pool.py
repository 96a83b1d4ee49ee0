"""A small bounded connection pool for the DB-API drivers (sqlite3, psycopg, PyMySQL).

At most ``size`` connections per session, opened on demand; a caller waits at most
``acquire_timeout`` for one (then the database counts as unavailable); connections idle longer
than ``idle_timeout`` are closed when the pool is next used; a connection that failed is
dropped rather than handed out again, and one idle longer than ``check_after`` is first
checked with ``check`` (a database restarted under it is then noticed before a query fails).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager


class PoolTimeout(Exception):
    pass


class Pool:
    def __init__(self, factory: Callable[[], object], size: int, acquire_timeout: float = 5.0,
                 idle_timeout: float = 60.0, check: Callable[[object], None] | None = None,
                 check_after: float = 2.0):
        self._factory = factory
        self._check = check
        self._check_after = check_after
        self._size = max(1, size)
        self._acquire_timeout = acquire_timeout
        self._idle_timeout = idle_timeout
        self._cond = threading.Condition()
        self._idle: list[tuple[object, float]] = []  # (connection, returned at)
        self._out = 0
        self._closed = False

    def _reap(self) -> list[object]:
        now = time.monotonic()
        old = [c for c, t in self._idle if now - t > self._idle_timeout]
        self._idle = [(c, t) for c, t in self._idle if now - t <= self._idle_timeout]
        return old

    @contextmanager
    def connection(self):
        conn = self._acquire()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            self._release(conn, ok)

    def _acquire(self):
        deadline = time.monotonic() + self._acquire_timeout
        with self._cond:
            stale = self._reap()
            while True:
                if self._closed:
                    raise PoolTimeout("the pool is closed")
                if self._idle:
                    conn, returned = self._idle.pop()
                    self._out += 1
                    if self._check is not None and time.monotonic() - returned > self._check_after:
                        stale.append(conn)  # checked below, outside the lock
                        conn = _CHECK
                    break
                if self._out + len(self._idle) < self._size:
                    self._out += 1
                    conn = None
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PoolTimeout(f"no connection free within {self._acquire_timeout:g} s")
                self._cond.wait(left)
        if conn is _CHECK:
            conn = stale.pop()
            try:
                self._check(conn)
            except Exception:  # noqa: BLE001 - any failure means: open a new one
                _close(conn)
                conn = None
        for c in stale:
            _close(c)
        if conn is None:
            try:
                conn = self._factory()
            except BaseException:
                with self._cond:
                    self._out -= 1
                    self._cond.notify()
                raise
        return conn

    def _release(self, conn, ok: bool) -> None:
        with self._cond:
            self._out -= 1
            if ok and not self._closed:
                self._idle.append((conn, time.monotonic()))
                conn = None
            self._cond.notify()
        if conn is not None:
            _close(conn)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for c, _ in idle:
            _close(c)


_CHECK = object()


def _close(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - a connection that cannot even close is gone anyway
        pass
