"""The in-process cache: a map bounded in bytes, with an eviction policy that can be switched
while it runs (LRU, LFU, FIFO, TTL-only) — the semantics of the Rust runtime's
``cache/memory.rs``, CONTRACT.md §13.

One lock per cache (so per session), held for a few dictionary and heap operations, never
across I/O. The next victim comes from a heap of ranks under the policy in force; a rank that
changed since it was pushed (the entry was read, rewritten or removed) is skipped when it comes
up ("lazy deletion"), and the heap is rebuilt when stale ranks outnumber live ones, so every
operation stays O(log n). Switching policy rebuilds it in O(n log n).

The logical clock ticks once per write or read, so ranks are unique. Expired entries are
purged at the start of every operation, so they never count against the bound, never answer a
read and never show in a listing. The bound counts key bytes plus value bytes; an entry larger
than the whole bound is not kept. Evictions count entries removed to make room; expiry is not
an eviction. Time comes from ``clock`` (``time.monotonic`` unless a test moves its own).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UnknownPolicy
from . import MAX_LISTED_ITEMS, item, stats

DEFAULT_MAX_BYTES = 1024 * 1024
POLICIES = ["lru", "lfu", "fifo", "ttl"]

MEANING = {
    "lru": "LRU: when full, the entry read or written longest ago is evicted",
    "lfu": "LFU: when full, the entry read or written the fewest times is evicted "
    "(the least recently used among equals)",
    "fifo": "FIFO: when full, the entry written first is evicted; reads do not count",
    "ttl": "TTL: when full, the entry closest to expiry is evicted; entries without a TTL go last",
}


def parse_policy(name: str) -> str:
    p = name.strip().lower()
    if p not in POLICIES:
        raise UnknownPolicy("the in-process cache", name, POLICIES)
    return p


@dataclass
class _Entry:
    value: bytes
    expires_at: float | None
    written: int  # clock of the last write: FIFO order and expiry tie-break
    touched: int  # clock of the last write or read: LRU order and listings
    uses: int  # writes and reads since the key was first stored: LFU order
    size: int

    def rank(self, policy: str) -> tuple:
        # (0, …) sorts before (1, …): under TTL every entry with a deadline goes before any without.
        if policy == "lru":
            return (1, 0, self.touched)
        if policy == "lfu":
            return (1, self.uses, self.touched)
        if policy == "fifo":
            return (1, 0, self.written)
        if self.expires_at is not None:
            return (0, self.expires_at, self.written)
        return (1, 0, self.touched)


class MemoryCache:
    engine = "memory"

    def __init__(self, policy: str = "lru", max_bytes: int = DEFAULT_MAX_BYTES,
                 default_ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._policy = parse_policy(policy) if policy.strip() else "lru"
        self._max = max_bytes or DEFAULT_MAX_BYTES
        self._default_ttl = default_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._recency: OrderedDict[str, None] = OrderedDict()  # oldest touch first
        self._victims: list[tuple[tuple, str]] = []
        self._expiry: list[tuple[float, int, str]] = []
        self._bytes = 0
        self._tick = 0
        self._hits = self._misses = self._evictions = 0

    @classmethod
    def from_spec(cls, spec: dict) -> MemoryCache:
        """``max_bytes`` 0 means 1 MiB, ``policy`` "" means lru, ``ttl_ms`` 0 means no default TTL."""
        ttl_ms = spec.get("ttl_ms") or 0
        return cls(spec.get("policy") or "", spec.get("max_bytes") or 0, ttl_ms / 1000 if ttl_ms else None)

    def __repr__(self) -> str:
        return f"MemoryCache(policy={self._policy!r}, entries={len(self._entries)})"

    # --- internals, called with the lock held ----------------------------------------------

    def _next_tick(self) -> int:
        self._tick += 1
        return self._tick

    def _take(self, key: str) -> _Entry | None:
        e = self._entries.pop(key, None)
        if e is not None:
            self._recency.pop(key, None)
            self._bytes -= e.size
        return e

    def _put(self, key: str, e: _Entry) -> None:
        self._entries[key] = e
        self._recency[key] = None
        self._recency.move_to_end(key)
        self._bytes += e.size
        heapq.heappush(self._victims, (e.rank(self._policy), key))
        if e.expires_at is not None:
            heapq.heappush(self._expiry, (e.expires_at, e.written, key))
        if len(self._victims) > 2 * len(self._entries) + 64:
            self._rebuild()

    def _rebuild(self) -> None:
        self._victims = [(e.rank(self._policy), k) for k, e in self._entries.items()]
        heapq.heapify(self._victims)
        self._expiry = [(e.expires_at, e.written, k) for k, e in self._entries.items() if e.expires_at is not None]
        heapq.heapify(self._expiry)

    def _purge(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            at, written, key = heapq.heappop(self._expiry)
            e = self._entries.get(key)
            if e is not None and e.expires_at == at and e.written == written:
                self._take(key)

    def _evict_one(self) -> bool:
        while self._victims:
            rank, key = heapq.heappop(self._victims)
            e = self._entries.get(key)
            if e is not None and e.rank(self._policy) == rank:
                self._take(key)
                return True
        return False

    # --- the cache -------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        with self._lock:
            self._purge(self._clock())
            e = self._take(key)
            if e is None:
                self._misses += 1
                return None
            self._hits += 1
            e.touched = self._next_tick()
            e.uses += 1
            self._put(key, e)
            return e.value

    def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        """``ttl_s`` None or 0 means the session's ``ttl_ms``, or no expiry when that is 0."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            ttl = ttl_s if ttl_s else self._default_ttl
            previous = self._take(key)
            size = len(key.encode()) + len(value)
            if size > self._max:
                # Larger than the whole cache; the old value (taken out above) is stale, so it goes too.
                return
            while self._bytes + size > self._max and self._evict_one():
                self._evictions += 1
            t = self._next_tick()
            self._put(key, _Entry(
                value=value, expires_at=now + ttl if ttl else None, written=t, touched=t,
                uses=previous.uses + 1 if previous else 1, size=size,
            ))

    def delete(self, key: str) -> None:
        with self._lock:
            self._purge(self._clock())
            self._take(key)

    def items(self, limit: int) -> list[dict]:
        with self._lock:
            now = self._clock()
            self._purge(now)
            out = []
            for key in reversed(self._recency):
                if len(out) >= min(limit, MAX_LISTED_ITEMS):
                    break
                e = self._entries[key]
                ttl_ms = None if e.expires_at is None else max(0, int((e.expires_at - now) * 1000 + 1e-6))
                out.append(item(key, ttl_ms, e.size, e.value))
            return out

    def stats(self) -> dict:
        with self._lock:
            self._purge(self._clock())
            return stats(self._hits, self._misses, self._evictions, self._bytes, self._max)

    def policy(self) -> dict:
        with self._lock:
            p = self._policy
        return {"policy": p, "policies": list(POLICIES), "changeable": True, "note": MEANING[p]}

    def set_policy(self, policy: str) -> None:
        p = parse_policy(policy)
        with self._lock:
            if p != self._policy:
                self._policy = p
                self._rebuild()

    def flush(self) -> None:
        with self._lock:
            self._entries.clear()
            self._recency.clear()
            self._victims.clear()
            self._expiry.clear()
            self._bytes = 0

    def close(self) -> None:
        self.flush()
