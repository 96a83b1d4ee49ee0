"""The Redis cache (redis-py): the Rust runtime's ``cache/redis.rs`` behaviour, CONTRACT.md §13.

Keys are ``{key_prefix}{key}``, so sessions that share a server stay apart; every listing and
flush is a ``SCAN MATCH {prefix}*``, never ``KEYS`` and never ``FLUSHDB``, because the keyspace
may hold other sessions' keys. Policies are the server's own ``maxmemory-policy``: a session
with a server of its own may change it (and gets ``maxmemory`` set to its ``max_bytes``); a
session on a shared server may not, because the change would apply to every session on it.

Hits and misses are this adapter's own reads; evictions, bytes and the bound are the server's.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse

import redis

from ..errors import CacheUnavailable, PolicyRefused, UnknownPolicy
from . import MAX_LISTED_ITEMS, PREVIEW_BYTES, item, stats

log = logging.getLogger(__name__)

POLICIES = [
    "noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
    "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl",
]
ITEMS_SCAN_BUDGET = 5000
SCAN_COUNT = 500
UNLINK_BATCH = 500
TIMEOUT = 3.0
MAX_CONNECTIONS = 8

SHARED_REFUSAL = (
    "this Redis server is shared by other sessions: its maxmemory-policy applies to every key "
    "on it, so changing it would change eviction for everyone. Start a session with its own "
    "Redis to try the policies"
)
CONFIG_DENIED = (
    "the Redis user may not run CONFIG (an ACL or a managed service), so the maxmemory-policy "
    "in force cannot be read or changed from here"
)
MEANING = {
    "noeviction": "noeviction: when full, writes fail and nothing is evicted",
    "allkeys-lru": "allkeys-lru: when full, evicts the (approximately) least recently used key",
    "allkeys-lfu": "allkeys-lfu: when full, evicts the (approximately) least frequently used key",
    "allkeys-random": "allkeys-random: when full, evicts a random key",
    "volatile-lru": "volatile-lru: when full, evicts the least recently used key among those with a TTL",
    "volatile-lfu": "volatile-lfu: when full, evicts the least frequently used key among those with a TTL",
    "volatile-random": "volatile-random: when full, evicts a random key among those with a TTL",
    "volatile-ttl": "volatile-ttl: when full, evicts the key with a TTL closest to expiry",
}


def parse_policy(name: str) -> str:
    p = name.strip().lower()
    if p not in POLICIES:
        raise UnknownPolicy("Redis", name, POLICIES)
    return p


def escape_glob(prefix: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix)


def _denied(e: redis.RedisError) -> bool:
    text = str(e)
    return isinstance(e, redis.exceptions.NoPermissionError) or "NOPERM" in text or "unknown command" in text


class RedisCache:
    engine = "redis"

    def __init__(self, spec: dict):
        self._wanted = (spec.get("policy") or "").strip().lower()
        if self._wanted:
            parse_policy(self._wanted)
        url = spec.get("url") or ""
        try:
            parts = urllib.parse.urlsplit(url)
            self._endpoint = f"{parts.hostname}:{parts.port or 6379}"
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=MAX_CONNECTIONS, timeout=TIMEOUT,
                socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
            )
        except (ValueError, redis.RedisError):
            # The parser's messages may quote the URL, so they are not passed on.
            raise CacheUnavailable(
                "the Redis URL is not valid; expected redis://[user:password@]host:port[/db]"
            ) from None
        self._r = redis.Redis(connection_pool=pool)
        self._prefix = spec.get("key_prefix") or ""
        self._pattern = escape_glob(self._prefix) + "*"
        self._shared = bool(spec.get("shared"))
        default_ttl = spec.get("ttl_ms") or 0
        self._default_ttl_ms = default_ttl or None
        self._lock = threading.Lock()
        self._hits = self._misses = 0
        try:
            self._r.ping()
        except redis.RedisError as e:
            self.close()
            raise self._unavailable("connect", e) from None
        if not self._shared:
            max_bytes = spec.get("max_bytes") or 0
            if max_bytes > 0:
                self._configure("maxmemory", str(max_bytes))
            if self._wanted:
                self._configure("maxmemory-policy", self._wanted)

    def __repr__(self) -> str:
        return f"RedisCache({self._endpoint}, shared={self._shared})"

    def _unavailable(self, what: str, e: Exception) -> CacheUnavailable:
        return CacheUnavailable(f"Redis at {self._endpoint}: {what} failed: {e}")

    def _configure(self, name: str, value: str) -> None:
        try:
            self._r.config_set(name, value)
        except redis.RedisError as e:
            if not _denied(e):
                raise self._unavailable("CONFIG SET", e) from None
            log.warning("cannot set Redis %s at %s: %s", name, self._endpoint, e)

    def _config_get(self, name: str) -> str | None:
        got = self._r.config_get(name)
        if not isinstance(got, dict):
            return None
        v = got.get(name, got.get(name.encode()))
        return v.decode() if isinstance(v, bytes) else v

    def _key(self, key: str) -> str:
        return self._prefix + key

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1

    def get(self, key: str) -> bytes | None:
        try:
            value = self._r.get(self._key(key))
        except redis.RedisError as e:
            raise self._unavailable("GET", e) from None
        self._count(value is not None)
        return value

    def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        ttl_ms = int(ttl_s * 1000) if ttl_s else self._default_ttl_ms
        try:
            if ttl_ms:
                self._r.set(self._key(key), value, px=max(1, ttl_ms))
            else:
                self._r.set(self._key(key), value)
        except redis.RedisError as e:
            raise self._unavailable("SET", e) from None

    def delete(self, key: str) -> None:
        try:
            self._r.delete(self._key(key))
        except redis.RedisError as e:
            raise self._unavailable("DEL", e) from None

    def _scan(self, cursor: int) -> tuple[int, list[bytes]]:
        try:
            return self._r.scan(cursor=cursor, match=self._pattern, count=SCAN_COUNT)
        except redis.RedisError as e:
            raise self._unavailable("SCAN", e) from None

    def _replies(self, commands: list[tuple]) -> list:
        """Each reply as it came, errors included, so one refused command (say MEMORY USAGE
        under an ACL) does not hide the others' answers."""
        if not commands:
            return []
        pipe = self._r.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c)
        try:
            return pipe.execute(raise_on_error=False)
        except redis.RedisError as e:
            raise self._unavailable("pipeline", e) from None

    def items(self, limit: int) -> list[dict]:
        limit = min(limit, MAX_LISTED_ITEMS)
        if limit <= 0:
            return []
        keys: set[bytes] = set()
        cursor, examined = 0, 0
        while True:
            cursor, page = self._scan(cursor)
            keys.update(page)
            examined += SCAN_COUNT
            if cursor == 0 or examined >= ITEMS_SCAN_BUDGET:
                break
        keys_sorted = sorted(keys)
        replies = self._replies([c for k in keys_sorted for c in (("OBJECT", "IDLETIME", k), ("PTTL", k))])
        ranked = []
        for i, k in enumerate(keys_sorted):
            idle, pttl = replies[2 * i], replies[2 * i + 1]
            if not isinstance(pttl, int) or pttl == -2:
                continue  # expired or deleted since the scan
            ranked.append((idle if isinstance(idle, int) else 2**63 - 1, pttl, k))
        left = lambda pttl: 2**63 - 1 if pttl < 0 else pttl  # noqa: E731
        ranked.sort(key=lambda r: (r[0], -left(r[1]), r[2]))
        ranked = ranked[:limit]
        replies = self._replies([
            c for _, _, k in ranked
            for c in (("MEMORY", "USAGE", k), ("STRLEN", k), ("GETRANGE", k, 0, PREVIEW_BYTES - 1))
        ])
        out = []
        prefix = self._prefix.encode()
        for i, (_, pttl, k) in enumerate(ranked):
            usage, strlen, value = replies[3 * i: 3 * i + 3]
            size = usage if isinstance(usage, int) else strlen if isinstance(strlen, int) else 0
            logical = k[len(prefix):] if k.startswith(prefix) else k
            out.append(item(logical.decode("utf-8", errors="replace"), pttl if pttl >= 0 else None,
                            size, value if isinstance(value, bytes) else b""))
        return out

    def stats(self) -> dict:
        try:
            info_stats = self._r.info("stats")
            info_memory = self._r.info("memory")
        except redis.RedisError as e:
            raise self._unavailable("INFO", e) from None
        try:
            max_bytes = int(self._config_get("maxmemory") or 0)
        except redis.RedisError as e:
            if not _denied(e):
                raise self._unavailable("CONFIG GET", e) from None
            max_bytes = 0
        with self._lock:
            hits, misses = self._hits, self._misses
        return stats(hits, misses, int(info_stats.get("evicted_keys", 0)),
                     int(info_memory.get("used_memory", 0)), max_bytes)

    def policy(self) -> dict:
        try:
            policy = self._config_get("maxmemory-policy") or ""
        except redis.RedisError as e:
            if not _denied(e):
                raise self._unavailable("CONFIG GET", e) from None
            return {"policy": self._wanted or "unknown", "policies": list(POLICIES), "changeable": False,
                    # On a shared server the reason that matters is the sharing, not the ACL.
                    "note": SHARED_REFUSAL if self._shared else CONFIG_DENIED}
        note = SHARED_REFUSAL if self._shared else MEANING.get(policy, "a policy this adapter does not know")
        return {"policy": policy, "policies": list(POLICIES), "changeable": not self._shared, "note": note}

    def set_policy(self, policy: str) -> None:
        p = parse_policy(policy)
        if self._shared:
            raise PolicyRefused(SHARED_REFUSAL)
        try:
            self._r.config_set("maxmemory-policy", p)
        except redis.RedisError as e:
            if _denied(e):
                raise PolicyRefused(CONFIG_DENIED) from None
            raise self._unavailable("CONFIG SET", e) from None

    def flush(self) -> None:
        """Scans to the end (every key of the session must go), unlinking page by page."""
        if not self._prefix and self._shared:
            raise PolicyRefused(
                "this session has no key prefix on a shared Redis: a flush would delete other sessions' keys"
            )
        cursor = 0
        while True:
            cursor, keys = self._scan(cursor)
            for i in range(0, len(keys), UNLINK_BATCH):
                try:
                    self._r.unlink(*keys[i: i + UNLINK_BATCH])
                except redis.RedisError as e:
                    raise self._unavailable("UNLINK", e) from None
            if cursor == 0:
                return

    def close(self) -> None:
        try:
            self._r.connection_pool.disconnect()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
            pass
