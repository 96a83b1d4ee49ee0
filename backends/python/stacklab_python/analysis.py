"""Analysis: how big the session's data is, how its cache is doing, and how fast its stack
reads, writes and hashes, measured on demand (CONTRACT.md §9).

The benchmark is bounded (``max_benchmark_ops`` reads and writes each), writes rows of its own
(usernames ``bench-…``) and removes them after, so a session's data is left as it was. Writes go
straight to the store with a precomputed password so the figure is the database's, not the hash
function's; hashing is measured per mode on its own (through the hashing gate). One benchmark
per session at a time, at most ``max_concurrent_benchmarks`` per instance (:mod:`.guard`), so
benchmarks cannot take every thread and connection between them.
"""

from __future__ import annotations

import math
import secrets
import time

from .config import Limits
from .errors import ApiError, CacheError, StoreError, from_cache_error
from .guard import guards
from .passwords import MODES, Hasher
from .service import Session, Trace
from .storage import NewUser


def overview(session: Session) -> dict:
    try:
        db = session.store.stats()
    except StoreError as e:
        raise ApiError.unavailable("the database", str(e)) from None
    try:
        cache = session.cache.stats()
    except CacheError as e:
        raise from_cache_error(e) from None
    lookups = cache["hits"] + cache["misses"]
    return {
        "database": db,
        "cache": {"engine": session.cache.engine, "stats": cache,
                  "hit_ratio": None if lookups == 0 else cache["hits"] / lookups},
    }


def figures(lat: list[float], wall: float) -> dict:
    d = sorted(lat)
    ms = [x * 1000 for x in d]

    def pct(p: float) -> float:
        i = max(math.ceil(len(d) * p) - 1, 0)
        return ms[i] if i < len(ms) else 0.0

    step = max(len(d) // 500, 1)
    return {
        "ops": len(d),
        "ops_per_sec": 0.0 if wall <= 0 else len(d) / wall,
        "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
        "samples_ms": ms[::step],
    }


def benchmark(session: Session, limits: Limits, reads: int, writes: int) -> dict:
    top = limits.max_benchmark_ops
    if not 1 <= reads <= top:
        raise ApiError.invalid("reads", f"reads is between 1 and {top}")
    if not 1 <= writes <= top:
        raise ApiError.invalid("writes", f"writes is between 1 and {top}")
    with guards().benchmark(session.code):
        return _run(session, limits, reads, writes)


def _store(fn, *args):
    try:
        return fn(*args)
    except StoreError as e:
        raise ApiError.unavailable("the database", str(e)) from None


def _run(session: Session, limits: Limits, reads: int, writes: int) -> dict:
    tag = secrets.token_hex(4)
    password = session.hasher.hash("benchmark-password")
    ids: list[int] = []
    try:
        lat = []
        wall = time.perf_counter()
        for i in range(writes):
            name = f"bench-{tag}-{i}"
            user = NewUser(username=name, username_key=name, email=f"{name}@bench.invalid",
                           email_key=f"{name}@bench.invalid", full_name="", password=password, now=0)
            t = time.perf_counter()
            new_id = _store(session.store.insert, user)
            lat.append(time.perf_counter() - t)
            ids.append(new_id)
        write_figures = figures(lat, time.perf_counter() - wall)

        # Database reads, then reads through the cache (the first read of each fills it).
        lat = []
        wall = time.perf_counter()
        for i in range(reads):
            t = time.perf_counter()
            _store(session.store.get, ids[i % len(ids)])
            lat.append(time.perf_counter() - t)
        db_figures = figures(lat, time.perf_counter() - wall)
        trace = Trace()
        for id_ in ids[:reads]:
            _quiet(session.get, id_, trace)
        lat = []
        cycle = min(len(ids), reads)
        wall = time.perf_counter()
        for i in range(reads):
            t = time.perf_counter()
            _quiet(session.get, ids[i % cycle], trace)
            lat.append(time.perf_counter() - t)
        cached_figures = figures(lat, time.perf_counter() - wall)
    finally:
        trace = Trace()
        for id_ in ids:
            _quiet(session.delete, id_, trace)

    hashing = []
    for mode in MODES:
        h = Hasher(mode, limits.bcrypt_cost, "benchmark-pepper")
        lat = []
        for _ in range(3):
            t = time.perf_counter()
            h.hash("correct horse battery")
            lat.append(time.perf_counter() - t)
        hashing.append({"mode": mode, "ms": figures(lat, 0)["p50_ms"]})
    return {
        "writes": write_figures, "db_reads": db_figures, "cached_reads": cached_figures,
        "cache_engine": session.cache.engine, "password_hashing": hashing,
    }


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except ApiError:
        pass
