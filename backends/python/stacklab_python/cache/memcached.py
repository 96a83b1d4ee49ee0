"""The Memcached cache: reads and writes through pymemcache, the inspector's view through
memcached's own text protocol — the Rust runtime's ``cache/memcached.rs``, CONTRACT.md §13.

Keys are ``{key_prefix}{key}``; a logical key memcached would not take (not printable ASCII,
starting with ``~``, or too long) is stored as ``{prefix}~x{hex}``, or ``{prefix}~h{sha256 hex}``
when even that is too long. Listing walks ``lru_crawler metadump all`` (bounded) and keeps this
session's prefix; previews come from ``mg <key> s t v u``, which does not bump the LRU. Memcached
has one eviction policy, LRU, so a change is refused.
"""

from __future__ import annotations

import hashlib
import math
import socket
import threading
import time
import urllib.parse

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import MemcacheError

from ..errors import CacheUnavailable, PolicyRefused
from . import MAX_LISTED_ITEMS, item, stats

MAX_KEY_BYTES = 250
MAX_PREFIX_BYTES = 150
POOL_SIZE = 4
ITEMS_DUMP_BUDGET = 10_000
FLUSH_DUMP_BUDGET = 1_000_000
TIMEOUT = 3.0
MAX_LINE = 4096
BUSY_WAIT = 0.1
BUSY_RETRIES = 30
DELETE_BATCH = 100
RELATIVE_EXPIRY_MAX = 30 * 24 * 3600

ONE_POLICY = (
    "Memcached has one eviction policy, LRU, and it cannot be switched: items are grouped by "
    "size into slab classes, each class keeps its own segmented LRU (hot, warm and cold), and "
    "when memory runs out the least recently used item of the class being written to is "
    "evicted. A key prefix keeps this session's keys apart by name only: on a shared server "
    "other sessions' items compete for the same memory and can push this session's items out."
)


def parse_addr(url: str) -> tuple[str, int]:
    """``host:port``, ``memcache://host:port`` or ``memcache://user:pass@host:port/`` (credentials
    dropped: never used, and never in a message). The port defaults to 11211."""
    invalid = CacheUnavailable("the Memcached address is not valid; expected host:port or memcache://host:port")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if sep:
        if scheme not in ("memcache", "memcached", "memcache+tcp"):
            raise invalid
    else:
        rest = url
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    host_port = rest.rpartition("@")[2]
    if not host_port or any(c.isspace() for c in host_port):
        raise invalid
    host, colon, port = host_port.rpartition(":")
    if colon and host and not host.endswith(":") and port.isdigit() and int(port) <= 65535:
        return host.strip("[]"), int(port)
    if ":" in host_port and not host_port.startswith("["):
        raise invalid
    return host_port.strip("[]"), 11211


def wire_key(prefix: str, key: str) -> str:
    room = MAX_KEY_BYTES - len(prefix.encode())
    raw = key.encode()
    if raw and len(raw) <= room and not key.startswith("~") and all(0x21 <= b <= 0x7E for b in raw):
        return prefix + key
    if 2 + 2 * len(raw) <= room:
        return prefix + "~x" + raw.hex()
    return prefix + "~h" + hashlib.sha256(raw).hexdigest()


def logical_key(prefix: str, wire: str) -> str:
    rest = wire[len(prefix):] if wire.startswith(prefix) else wire
    if rest.startswith("~x"):
        try:
            return bytes.fromhex(rest[2:]).decode()
        except ValueError:
            pass
    return rest


def exptime(ttl_s: float) -> int:
    """Memcached's exptime: whole seconds rounded up, or a Unix time beyond 30 days."""
    secs = max(1, math.ceil(round(ttl_s * 1000) / 1000))
    if secs <= RELATIVE_EXPIRY_MAX:
        return secs
    return min(int(time.time()) + secs, 2**32 - 1)


def parse_dump_line(line: str) -> dict | None:
    """``key=… exp=… la=… cas=… fetch=… cls=… size=…``; None for anything else."""
    fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
    try:
        return {
            "key": urllib.parse.unquote(fields["key"], errors="replace"),
            "la": int(fields["la"]),
            "cas": int(fields.get("cas", 0)),
            "size": int(fields.get("size", 0)),
        }
    except (KeyError, ValueError):
        return None


class _Raw:
    """A text-protocol connection; every exchange has TIMEOUT."""

    def __init__(self, addr: tuple[str, int]):
        self.sock = socket.create_connection(addr, timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str:
        raw = self.file.readline(MAX_LINE)
        if not raw:
            raise OSError("connection closed")
        if not raw.endswith(b"\n"):
            raise OSError("line too long")
        return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")

    def exact(self, n: int) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise OSError("connection closed")
        return data

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


class MemcachedCache:
    engine = "memcached"

    def __init__(self, spec: dict):
        self._host, self._port = parse_addr(spec.get("url") or "")
        self._addr = f"{self._host}:{self._port}"
        self._prefix = spec.get("key_prefix") or ""
        if len(self._prefix.encode()) > MAX_PREFIX_BYTES or not all(0x21 <= b <= 0x7E for b in self._prefix.encode()):
            raise CacheUnavailable(
                "a Memcached key prefix must be printable ASCII without spaces, at most "
                f"{MAX_PREFIX_BYTES} bytes; this session's is not"
            )
        self._shared = bool(spec.get("shared"))
        ttl_ms = spec.get("ttl_ms") or 0
        self._default_ttl = ttl_ms / 1000 if ttl_ms else None
        self._client = PooledClient(
            (self._host, self._port), max_pool_size=POOL_SIZE, connect_timeout=TIMEOUT, timeout=TIMEOUT,
            no_delay=True, default_noreply=False,
        )
        self._lock = threading.Lock()
        self._hits = self._misses = 0
        try:
            self._client.version()
        except (MemcacheError, OSError) as e:
            self.close()
            raise self._unavailable("connect", e) from None

    def __repr__(self) -> str:
        return f"MemcachedCache({self._addr}, shared={self._shared})"

    def _unavailable(self, what: str, e: Exception) -> CacheUnavailable:
        return CacheUnavailable(f"Memcached at {self._addr}: {what} failed: {e}")

    def get(self, key: str) -> bytes | None:
        try:
            value = self._client.get(wire_key(self._prefix, key))
        except (MemcacheError, OSError) as e:
            raise self._unavailable("get", e) from None
        with self._lock:
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
        return value

    def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        ttl = ttl_s if ttl_s else self._default_ttl
        try:
            self._client.set(wire_key(self._prefix, key), value, expire=exptime(ttl) if ttl else 0, noreply=False)
        except (MemcacheError, OSError) as e:
            raise self._unavailable("set", e) from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete(wire_key(self._prefix, key), noreply=False)
        except (MemcacheError, OSError) as e:
            raise self._unavailable("delete", e) from None

    def _raw(self) -> _Raw:
        try:
            return _Raw((self._host, self._port))
        except OSError as e:
            raise self._unavailable("connect", e) from None

    def _metadump(self, raw: _Raw, budget: int) -> tuple[list[dict], bool]:
        """The session's items; False when the budget ran out first (the connection is then in
        the middle of the dump and must be dropped)."""
        busy = 0
        while True:
            raw.send(b"lru_crawler metadump all\r\n")
            found, lines = [], 0
            while True:
                line = raw.line()
                if line == "END":
                    return found, True
                if line.startswith("BUSY") or "try again" in line:
                    busy += 1
                    if busy > BUSY_RETRIES:
                        raise CacheUnavailable(f"Memcached at {self._addr}: the LRU crawler stayed busy: {line}")
                    time.sleep(BUSY_WAIT)
                    break
                if line.startswith("ERROR") or "_ERROR" in line:
                    raise CacheUnavailable(f"Memcached at {self._addr}: lru_crawler metadump refused: {line}")
                d = parse_dump_line(line)
                if d is not None and d["key"].startswith(self._prefix):
                    found.append(d)
                lines += 1
                if lines >= budget:
                    return found, False

    def items(self, limit: int) -> list[dict]:
        limit = min(limit, MAX_LISTED_ITEMS)
        if limit <= 0:
            return []
        raw = self._raw()
        try:
            found, complete = self._metadump(raw, ITEMS_DUMP_BUDGET)
            found.sort(key=lambda d: (d["la"], d["cas"]), reverse=True)
            found = found[:limit]
            if not found:
                return []
            if not complete:
                raw.close()
                raw = self._raw()
            raw.send("".join(f"mg {d['key']} s t v u\r\n" for d in found).encode())
            out = []
            for d in found:
                header = raw.line()
                words = header.split(" ")
                if words[0] == "EN":
                    continue  # gone (expired or deleted) since the dump
                if words[0] != "VA" or len(words) < 2 or not words[1].isdigit():
                    raise CacheUnavailable(f"Memcached at {self._addr}: unexpected reply to mg: {header}")
                n = int(words[1])
                ttl = next((w[1:] for w in words[2:] if w.startswith("t")), None)
                value = raw.exact(n + 2)[:n]
                ttl_ms = int(ttl) * 1000 if ttl is not None and ttl.lstrip("-").isdigit() and int(ttl) >= 0 else None
                out.append(item(logical_key(self._prefix, d["key"]), ttl_ms, d["size"], value))
            return out
        except OSError as e:
            raise self._unavailable("lru_crawler metadump", e) from None
        finally:
            raw.close()

    def stats(self) -> dict:
        raw = self._raw()
        try:
            raw.send(b"stats\r\n")
            got = {}
            while True:
                line = raw.line()
                if line == "END":
                    break
                words = line.split(" ")
                if len(words) < 3 or words[0] != "STAT":
                    raise CacheUnavailable(f"Memcached at {self._addr}: unexpected reply to stats: {line}")
                got[words[1]] = words[2]
        except OSError as e:
            raise self._unavailable("stats", e) from None
        finally:
            raw.close()
        num = lambda k: int(got[k]) if got.get(k, "").isdigit() else 0  # noqa: E731
        with self._lock:
            hits, misses = self._hits, self._misses
        return stats(hits, misses, num("evictions"), num("bytes"), num("limit_maxbytes"))

    def policy(self) -> dict:
        return {"policy": "lru", "policies": ["lru"], "changeable": False, "note": ONE_POLICY}

    def set_policy(self, policy: str) -> None:
        raise PolicyRefused(ONE_POLICY)

    def flush(self) -> None:
        """Deletes the session's items a metadump finds; flush_all would empty the whole server."""
        if not self._prefix and self._shared:
            raise PolicyRefused(
                "this session has no key prefix on a shared Memcached: a flush would delete other sessions' items"
            )
        raw = self._raw()
        try:
            found, complete = self._metadump(raw, FLUSH_DUMP_BUDGET)
            if not complete:
                raw.close()
                raw = self._raw()
            for i in range(0, len(found), DELETE_BATCH):
                batch = found[i: i + DELETE_BATCH]
                raw.send("".join(f"delete {d['key']}\r\n" for d in batch).encode())
                for _ in batch:
                    line = raw.line()
                    if line not in ("DELETED", "NOT_FOUND"):
                        raise CacheUnavailable(f"Memcached at {self._addr}: unexpected reply to delete: {line}")
        except OSError as e:
            raise self._unavailable("delete", e) from None
        finally:
            raw.close()

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is gone either way
            pass
