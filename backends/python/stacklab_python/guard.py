"""Bounds on the work one request can make an instance do: password hashing and benchmarks
(CONTRACT.md §9a; the same numbers and codes as the Rust runtime's ``guard.rs``).

- Hashing gate: at most ``max_concurrent_hashes`` hashes at once; one that cannot start within
  ``hash_wait_ms`` is refused with ``503 busy`` and ``Retry-After`` (a bounded queue, rather
  than waiting without end behind a flood).
- Benchmarks: one per session at a time (``409 benchmark_running``), at most
  ``max_concurrent_benchmarks`` per instance (``503 busy``), refused at once.
- The hashing fields per GraphQL document are counted in :mod:`.gql`.

One ``Guards`` per instance (:func:`configure` at start); the counters are in ``GET /healthz``.
"""

from __future__ import annotations

import contextlib
import threading

from .errors import ApiError

RETRY_AFTER_SECS = 1


class Guards:
    def __init__(self, max_hashes: int, hash_wait_s: float, max_benchmarks: int):
        self.max_hashes = max_hashes
        self.hash_wait_s = hash_wait_s
        self.max_benchmarks = max_benchmarks
        self._hashes = threading.BoundedSemaphore(max_hashes)
        self._lock = threading.Lock()
        self._hashing = 0
        self._benchmarking: set[str] = set()
        self._counts = dict.fromkeys(
            ("hashes", "hashes_refused", "graphql_refused", "benchmarks",
             "benchmarks_refused_session", "benchmarks_refused_busy"), 0)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def hash(self, fn):
        """Runs ``fn`` (a hash or a verification) once a permit is free, waiting at most
        ``hash_wait_s`` for it."""
        if not self._hashes.acquire(timeout=self.hash_wait_s):
            self._count("hashes_refused")
            raise ApiError.busy(
                f"this instance is hashing {self.max_hashes} passwords already and none finished "
                f"within {round(self.hash_wait_s * 1000)} ms; retry in a second")
        with self._lock:
            self._counts["hashes"] += 1
            self._hashing += 1
        try:
            return fn()
        finally:
            with self._lock:
                self._hashing -= 1
            self._hashes.release()

    @contextlib.contextmanager
    def benchmark(self, session: str):
        with self._lock:
            if session in self._benchmarking:
                self._counts["benchmarks_refused_session"] += 1
                raise ApiError.benchmark_running()
            if len(self._benchmarking) >= self.max_benchmarks:
                self._counts["benchmarks_refused_busy"] += 1
                raise ApiError.busy(
                    f"this instance runs {self.max_benchmarks} benchmarks already; retry when one "
                    "has finished")
            self._benchmarking.add(session)
            self._counts["benchmarks"] += 1
        try:
            yield
        finally:
            with self._lock:
                self._benchmarking.discard(session)

    def graphql_refused(self) -> None:
        self._count("graphql_refused")

    def snapshot(self) -> dict:
        with self._lock:
            c = dict(self._counts)
            return {
                "hashing": {"max": self.max_hashes, "running": self._hashing,
                            "started": c["hashes"], "refused": c["hashes_refused"]},
                "benchmarks": {"max": self.max_benchmarks, "running": len(self._benchmarking),
                               "started": c["benchmarks"],
                               "refused_session": c["benchmarks_refused_session"],
                               "refused_busy": c["benchmarks_refused_busy"]},
                "graphql_hashes_refused": c["graphql_refused"],
            }


_guards: Guards | None = None


def configure(limits) -> Guards:
    """Sets this instance's bounds from its limits (once, at start)."""
    global _guards
    _guards = Guards(limits.max_concurrent_hashes, limits.hash_wait_ms / 1000,
                     limits.max_concurrent_benchmarks)
    return _guards


def guards() -> Guards:
    global _guards
    if _guards is None:
        from .config import Limits

        configure(Limits())
    return _guards
