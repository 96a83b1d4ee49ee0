"""Cache adapters behind one interface: in-process, Redis, Memcached, or none (CONTRACT.md §13).

The service speaks in logical keys (``user:42``); Redis and Memcached put the session's
``key_prefix`` in front, so sessions sharing a server never see each other's keys. Hits and
misses are counted by the adapter for this session; evictions and memory come from the engine
where it knows them.

- :mod:`.memory`: in-process, bounded in bytes, LRU / LFU / FIFO / TTL-only, switchable live.
- :mod:`.redis_cache`: redis-py; policies are the eight classic ``maxmemory-policy`` values.
- :mod:`.memcached`: pymemcache; items listed with ``lru_crawler metadump``.
"""

from __future__ import annotations

from ..errors import PolicyRefused

# Items listed at most, and bytes of a value shown in a listing.
MAX_LISTED_ITEMS = 20
PREVIEW_BYTES = 120


def preview(value: bytes) -> str:
    return value[:PREVIEW_BYTES].decode("utf-8", errors="replace")


def item(key: str, ttl_ms: int | None, size: int, value: bytes) -> dict:
    return {"key": key, "ttl_ms": ttl_ms, "bytes": size, "value_preview": preview(value)}


def stats(hits=0, misses=0, evictions=0, size=0, max_bytes=0) -> dict:
    return {"hits": hits, "misses": misses, "evictions": evictions, "bytes": size, "max_bytes": max_bytes}


class NoCache:
    """``cache = "none"``: every read misses, nothing is kept."""

    engine = "none"

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        pass

    def delete(self, key: str) -> None:
        pass

    def items(self, limit: int) -> list[dict]:
        return []

    def stats(self) -> dict:
        return stats()

    def policy(self) -> dict:
        return {"policy": "none", "policies": [], "changeable": False,
                "note": "no cache: every read goes to the database"}

    def set_policy(self, policy: str) -> None:
        raise PolicyRefused("this session has no cache, so there is no policy to change")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def connect(spec: dict):
    """Opens the cache a descriptor's ``cache`` names."""
    engine = spec["engine"]
    if engine == "none":
        return NoCache()
    if engine == "memory":
        from .memory import MemoryCache

        return MemoryCache.from_spec(spec)
    if engine == "redis":
        from .redis_cache import RedisCache

        return RedisCache(spec)
    from .memcached import MemcachedCache

    return MemcachedCache(spec)
