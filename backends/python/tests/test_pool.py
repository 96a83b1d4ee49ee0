"""The SQL connection pool's bounds (storage/pool.py): at most ``size`` connections, a wait
that ends at its deadline, failed connections dropped, idle ones checked before reuse."""

from __future__ import annotations

import threading

import pytest

from stacklab_python.storage import pool as pool_mod
from stacklab_python.storage.pool import Pool, PoolTimeout


class Conn:
    made = 0

    def __init__(self):
        Conn.made += 1
        self.n = Conn.made
        self.closed = False
        self.alive = True

    def close(self):
        self.closed = True


def check(conn):
    if not conn.alive:
        raise OSError("gone")


def test_bounded_and_the_wait_has_a_deadline():
    p = Pool(Conn, 2, acquire_timeout=0.2)
    with p.connection() as a, p.connection() as b:
        assert a is not b
        with pytest.raises(PoolTimeout, match="within 0.2 s"):
            with p.connection():
                pass
    with p.connection() as c:
        assert c in (a, b), "a returned connection is reused"


def test_a_waiter_gets_the_connection_returned():
    p = Pool(Conn, 1, acquire_timeout=5)
    got = []
    with p.connection() as a:
        t = threading.Thread(target=lambda: got.append(p._acquire()))
        t.start()
    t.join(5)
    assert got == [a]


def test_failed_connections_are_dropped_and_stale_ones_checked(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(pool_mod.time, "monotonic", lambda: now[0])
    p = Pool(Conn, 2, check=check, check_after=2.0, idle_timeout=60)
    with pytest.raises(RuntimeError):
        with p.connection() as a:
            raise RuntimeError("query failed")
    assert a.closed
    with p.connection() as b:
        pass
    now[0] += 1
    with p.connection() as c:
        assert c is b, "recently used: no check"
    b.alive = False
    now[0] += 3
    with p.connection() as d:
        assert d is not b and b.closed, "idle past check_after and dead: replaced"
    now[0] += 61
    with p.connection() as e:
        assert e is not d and d.closed, "idle past idle_timeout: closed"
    p.close()
    with pytest.raises(PoolTimeout):
        with p.connection():
            pass
