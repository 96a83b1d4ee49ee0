"""The users service: the one place that decides what REST and GraphQL do, so they cannot drift.

Reads go to the cache first, then to the database, and fill the cache; writes follow the
session's write policy — cache-aside drops the entry, write-through replaces it. The cache holds
a user in its stored form (hashes, ciphertext), like the database does, so encryption at rest
also keeps plaintext out of the cache. The cached JSON is the Rust runtime's byte for byte
(CONTRACT.md §13), so either runtime's entry is a hit for the other.

Each call records into a :class:`Trace`: time spent in the cache and in the database, and the
cache outcome, which the HTTP layer turns into ``Server-Timing`` and ``x-stacklab-cache``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

from . import cache as caches
from . import storage
from .cache import NoCache
from .config import Limits
from .crypto import FieldCrypto
from .errors import ApiError, CacheError, Conflict, StoreError, from_cache_error
from .passwords import Hasher
from .storage import Changes, NewUser, Search, StoredUser

log = logging.getLogger(__name__)

# Cache entries live this long when the descriptor does not say.
DEFAULT_TTL_S = 300.0


class Trace:
    """Time per engine during one request, and the cache outcome."""

    __slots__ = ("cache_s", "db_s", "outcome")

    def __init__(self):
        self.cache_s = 0.0
        self.db_s = 0.0
        self.outcome: str | None = None

    def record(self, outcome: str) -> None:
        """A miss anywhere makes the request a miss; an earlier bypass stays; else the latest."""
        if self.outcome == "miss" or outcome == "miss":
            self.outcome = "miss"
        elif self.outcome == "bypass":
            pass
        else:
            self.outcome = outcome


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def log_id(code: str) -> str:
    """How a session is named in logs: never the code itself (it is the session's cookie)."""
    return hashlib.sha256(code.encode()).hexdigest()[:8]


@dataclass
class Page:
    items: list[dict]
    total: int
    limit: int
    offset: int

    def to_json(self) -> dict:
        return {"items": self.items, "total": self.total, "limit": self.limit, "offset": self.offset}


def _cached_json(u: StoredUser) -> bytes:
    # serde's field order and compact form.
    return json.dumps(
        {"id": u.id, "username": u.username, "email": u.email, "full_name": u.full_name,
         "password": u.password, "created_at": u.created_at, "updated_at": u.updated_at},
        separators=(",", ":"), ensure_ascii=False,
    ).encode()


def _from_cache(raw: bytes) -> StoredUser | None:
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(d, dict):
        return None
    ints = ("id", "created_at", "updated_at")
    strs = ("username", "email", "full_name", "password")
    if not all(isinstance(d.get(k), int) and not isinstance(d.get(k), bool) for k in ints):
        return None
    if not all(isinstance(d.get(k), str) for k in strs):
        return None
    return StoredUser(d["id"], d["username"], d["email"], d["full_name"], d["password"], d["created_at"], d["updated_at"])


class Session:
    """One session's stack, open: its store, its cache, its secrets."""

    def __init__(self, descriptor: dict, store, cache, limits: Limits):
        self.descriptor = descriptor
        self.code = descriptor["session"]
        self.store = store
        self.cache = cache
        self.limits = limits
        self.write_through = descriptor.get("write_policy", "cache-aside") == "write-through"
        self.crypto = FieldCrypto(descriptor.get("encryption_key") or "") \
            if descriptor.get("encryption", "none") == "aes-256-gcm" else None
        self.hasher = Hasher(descriptor.get("password_storage") or "argon2id", limits.bcrypt_cost,
                             descriptor.get("pepper") or "")
        ttl_ms = (descriptor.get("cache") or {}).get("ttl_ms") or 0
        self.ttl_s = ttl_ms / 1000 if ttl_ms else DEFAULT_TTL_S
        self.last_used = time.monotonic()

    def __repr__(self) -> str:
        return f"Session({log_id(self.code)}, store={self.store!r}, cache={self.cache!r})"

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def close(self) -> None:
        for part in (self.store, self.cache):
            try:
                part.close()
            except Exception:  # noqa: BLE001 - closing must not fail the caller
                log.warning("closing %s of session %s failed", type(part).__name__, log_id(self.code), exc_info=True)

    # --- helpers ---------------------------------------------------------------------------

    def _seal(self, v: str) -> str:
        return self.crypto.seal(v) if self.crypto else v

    def _email_key(self, lower: str) -> str:
        return self.crypto.index(lower) if self.crypto else lower

    def to_user(self, s: StoredUser) -> dict:
        if self.crypto:
            email = self.crypto.open(s.email)
            full_name = self.crypto.open(s.full_name) if s.full_name else ""
        else:
            email, full_name = s.email, s.full_name
        return {"id": s.id, "username": s.username, "email": email, "full_name": full_name,
                "stored_password": s.password, "stored_email": s.email,
                "created_at": s.created_at, "updated_at": s.updated_at}

    def _db(self, trace: Trace, fn, *args):
        t = time.perf_counter()
        try:
            return fn(*args)
        except Conflict:
            raise
        except StoreError as e:
            raise ApiError.unavailable("the database", str(e)) from None
        finally:
            trace.db_s += time.perf_counter() - t

    @staticmethod
    def _key(id_: int) -> str:
        return f"user:{id_}"

    def _cache_put(self, u: StoredUser, trace: Trace) -> None:
        t = time.perf_counter()
        try:
            self.cache.set(self._key(u.id), _cached_json(u), self.ttl_s)
        except CacheError as e:
            # A cache that fails is a slower request, not a failed one.
            log.warning("session %s: cache write failed: %s", log_id(self.code), e)
        trace.cache_s += time.perf_counter() - t

    def _cache_drop(self, id_: int, trace: Trace) -> None:
        t = time.perf_counter()
        try:
            self.cache.delete(self._key(id_))
        except CacheError as e:
            log.warning("session %s: cache delete failed: %s", log_id(self.code), e)
        trace.cache_s += time.perf_counter() - t

    def _conflict(self, e: Conflict, username: str, email: str) -> ApiError:
        return ApiError.conflict(e.field, email if e.field == "email" else username)

    # --- the service -----------------------------------------------------------------------

    def create(self, username: str, email: str, password: str, full_name: str | None, trace: Trace) -> dict:
        username = self.limits.username(username)
        email = self.limits.email(email)
        self.limits.password(password)
        full_name = self.limits.full_name(full_name or "")
        now = now_ms()
        new = NewUser(
            username=username, username_key=username.lower(),
            email=self._seal(email), email_key=self._email_key(email.lower()),
            full_name=self._seal(full_name) if full_name else "",
            password=self.hasher.hash(password), now=now,
        )
        try:
            id_ = self._db(trace, self.store.insert, new)
        except Conflict as e:
            raise self._conflict(e, username, email) from None
        stored = StoredUser(id_, new.username, new.email, new.full_name, new.password, now, now)
        if self.write_through:
            self._cache_put(stored, trace)
        trace.record("bypass")
        return self.to_user(stored)

    def load(self, id_: int, trace: Trace) -> StoredUser:
        t = time.perf_counter()
        try:
            cached = self.cache.get(self._key(id_))
        except CacheError as e:
            log.warning("session %s: cache read failed: %s", log_id(self.code), e)
            cached = None
        trace.cache_s += time.perf_counter() - t
        if cached is not None:
            u = _from_cache(cached)
            if u is not None:
                trace.record("hit")
                return u
        trace.record("bypass" if isinstance(self.cache, NoCache) else "miss")
        stored = self._db(trace, self.store.get, id_)
        if stored is None:
            raise ApiError.not_found("user", id_)
        self._cache_put(stored, trace)
        return stored

    def get(self, id_: int, trace: Trace) -> dict:
        return self.to_user(self.load(id_, trace))

    def list(self, q: str | None, limit: int | None, offset: int | None, trace: Trace) -> Page:
        limit = 20 if limit is None else limit
        offset = 0 if offset is None else offset
        if not 1 <= limit <= self.limits.max_page:
            raise ApiError.invalid("limit", f"limit must be between 1 and {self.limits.max_page}")
        if offset < 0:
            raise ApiError.invalid("offset", "offset cannot be negative")
        q = (q or "").strip()
        if not q:
            search = Search()
        else:
            if len(q) > self.limits.max_email:
                raise ApiError.invalid("q", f"search text is at most {self.limits.max_email} characters")
            if "\0" in q:
                raise ApiError.invalid("q", "search text cannot contain the NUL character")
            lower = q.lower()
            search = Search(lower, self.crypto.index(lower) if self.crypto else None)
        rows, total = self._db(trace, self.store.search, search, limit, offset)
        trace.record("bypass")
        return Page([self.to_user(r) for r in rows], total, limit, offset)

    def update(self, id_: int, fields: dict, trace: Trace) -> dict:
        changes = Changes(now=now_ms())
        username = email = ""
        if fields.get("username") is not None:
            username = self.limits.username(fields["username"])
            changes.username = (username, username.lower())
        if fields.get("email") is not None:
            email = self.limits.email(fields["email"])
            changes.email = (self._seal(email), self._email_key(email.lower()))
        if fields.get("full_name") is not None:
            f = self.limits.full_name(fields["full_name"])
            changes.full_name = self._seal(f) if f else ""
        if fields.get("password") is not None:
            self.limits.password(fields["password"])
            changes.password = self.hasher.hash(fields["password"])
        try:
            stored = self._db(trace, self.store.update, id_, changes)
        except Conflict as e:
            raise self._conflict(e, username, email) from None
        if stored is None:
            raise ApiError.not_found("user", id_)
        if self.write_through:
            self._cache_put(stored, trace)
        else:
            self._cache_drop(stored.id, trace)
        trace.record("bypass")
        return self.to_user(stored)

    def delete(self, id_: int, trace: Trace) -> None:
        gone = self._db(trace, self.store.delete, id_)
        self._cache_drop(id_, trace)
        trace.record("bypass")
        if not gone:
            raise ApiError.not_found("user", id_)

    def verify_password(self, id_: int, password: str, trace: Trace) -> bool:
        if len(password.encode()) > self.limits.max_password:
            return False
        stored = self.load(id_, trace)
        return self.hasher.verify(password, stored.password)


def open_session(descriptor: dict, limits: Limits, db_connections: int) -> Session:
    """Connects the descriptor's store and cache; an engine that cannot be reached is a 503."""
    db = descriptor["database"]
    try:
        store = storage.connect(db, db_connections)
    except StoreError as e:
        raise ApiError.unavailable(db["engine"], str(e)) from None
    try:
        cache = caches.connect(descriptor["cache"])
    except CacheError as e:
        store.close()
        raise from_cache_error(e) from None
    except BaseException:
        store.close()
        raise
    try:
        return Session(descriptor, store, cache, limits)
    except BaseException:
        store.close()
        cache.close()
        raise
