"""MongoDB through pymongo (CONTRACT.md §10, the format ``backends/rust/src/storage/mongo.rs`` writes).

Rows are documents with an Int64 ``_id`` from a counter document (so ids look the same on every
engine), unique indexes on ``username_key`` and ``email_key`` enforce uniqueness the way SQL
unique constraints do, and search text is matched with an escaped ``$regex`` — filters are
built from typed values here, never from the client's JSON, so an operator such as
``{"$gt": ""}`` sent as a value is only ever refused by the body check.

Numbers are written as Int64 explicitly: pymongo would write a small Python int as Int32, and
the Rust runtime writes Int64.
"""

from __future__ import annotations

import re

from bson.int64 import Int64
from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.uri_parser import parse_uri

from ..errors import Conflict, StoreUnavailable
from . import Changes, NewUser, Search, StoredUser, regex_literal

TIMEOUT_MS = 5000
# "E11000 duplicate key error collection: db.users index: users_email_key dup key: …" from
# MongoDB; "UNIQUE constraint failed: index 'idx_users_email_key'" from SQLite-backed stand-ins.
_INDEX = re.compile(r"index:? '?([\w.$-]+)")


def _unavailable(what: str, e: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"MongoDB could not {what}: {_describe(e)}")


def _describe(e: Exception) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def _conflict(e: DuplicateKeyError) -> Conflict:
    details = e.details or {}
    pattern = details.get("keyPattern") or {}
    if pattern:
        return Conflict("email" if "email_key" in pattern else "username")
    text = str(details.get("errmsg") or e)
    m = _INDEX.search(text)
    return Conflict("email" if "email_key" in (m.group(1) if m else text) else "username")


def _num(d: dict, key: str) -> int:
    v = d.get(key)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _user(d: dict) -> StoredUser:
    s = lambda k: d.get(k) if isinstance(d.get(k), str) else ""  # noqa: E731
    return StoredUser(
        id=_num(d, "_id"), username=s("username"), email=s("email"), full_name=s("full_name"),
        password=s("password"), created_at=_num(d, "created_at"), updated_at=_num(d, "updated_at"),
    )


class MongoStore:
    engine = "mongodb"

    def __init__(self, url: str, database: str | None, max_connections: int):
        try:
            default_db = parse_uri(url).get("database")
        except Exception:  # noqa: BLE001 - the parser's message may quote the URL
            raise StoreUnavailable("cannot reach MongoDB: the connection string is not valid") from None
        try:
            self._client = MongoClient(
                url, maxPoolSize=max(1, max_connections), serverSelectionTimeoutMS=TIMEOUT_MS,
                connectTimeoutMS=TIMEOUT_MS, socketTimeoutMS=30_000, uuidRepresentation="standard",
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot reach MongoDB: {_describe(e)}") from None
        self._db = self._client[database or default_db or "stacklab"]
        try:
            self._db.command("ping")
            self._users = self._db["users"]
            for key in ("username_key", "email_key"):
                self._users.create_index([(key, ASCENDING)], unique=True, name=f"users_{key}")
        except PyMongoError as e:
            self._client.close()
            raise _unavailable("answer a ping and create its indexes", e) from None
        self._counters = self._db["counters"]

    def __repr__(self) -> str:
        return "MongoStore()"

    @staticmethod
    def _filter(search: Search) -> dict:
        if search.lower is None:
            return {}
        re_ = regex_literal(search.lower)
        email = {"$regex": re_} if search.email_index is None else search.email_index
        return {"$or": [{"username_key": {"$regex": re_}}, {"email_key": email}]}

    def insert(self, u: NewUser) -> int:
        try:
            counter = self._counters.find_one_and_update(
                {"_id": "users"}, {"$inc": {"seq": Int64(1)}}, upsert=True, return_document=ReturnDocument.AFTER
            )
        except PyMongoError as e:
            raise _unavailable("number the new user", e) from None
        if not counter:
            raise StoreUnavailable("MongoDB returned no counter")
        id_ = _num(counter, "seq")
        row = {
            "_id": Int64(id_),
            "username": u.username, "username_key": u.username_key,
            "email": u.email, "email_key": u.email_key,
            "full_name": u.full_name, "password": u.password,
            "created_at": Int64(u.now), "updated_at": Int64(u.now),
        }
        try:
            self._users.insert_one(row)
        except DuplicateKeyError as e:
            raise _conflict(e) from None
        except PyMongoError as e:
            raise _unavailable("insert", e) from None
        return id_

    def get(self, id_: int) -> StoredUser | None:
        try:
            found = self._users.find_one({"_id": Int64(id_)})
        except PyMongoError as e:
            raise _unavailable("read", e) from None
        return None if found is None else _user(found)

    def search(self, search: Search, limit: int, offset: int) -> tuple[list[StoredUser], int]:
        f = self._filter(search)
        try:
            docs = list(self._users.find(f).sort("_id", ASCENDING).skip(max(0, offset)).limit(limit))
            total = self._users.count_documents(f)
        except PyMongoError as e:
            raise _unavailable("search", e) from None
        return [_user(d) for d in docs], int(total)

    def update(self, id_: int, c: Changes) -> StoredUser | None:
        s: dict = {"updated_at": Int64(c.now)}
        if c.username is not None:
            s["username"], s["username_key"] = c.username
        if c.email is not None:
            s["email"], s["email_key"] = c.email
        if c.full_name is not None:
            s["full_name"] = c.full_name
        if c.password is not None:
            s["password"] = c.password
        try:
            found = self._users.find_one_and_update(
                {"_id": Int64(id_)}, {"$set": s}, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError as e:
            raise _conflict(e) from None
        except PyMongoError as e:
            raise _unavailable("update", e) from None
        return None if found is None else _user(found)

    def delete(self, id_: int) -> bool:
        try:
            return self._users.delete_one({"_id": Int64(id_)}).deleted_count > 0
        except PyMongoError as e:
            raise _unavailable("delete", e) from None

    def stats(self) -> dict:
        try:
            rows = self._users.count_documents({})
            st = self._db.command({"collStats": "users"})
        except PyMongoError as e:
            raise _unavailable("read its size", e) from None
        return {"engine": "mongodb", "size_bytes": _num(st, "size") + _num(st, "totalIndexSize"), "rows": int(rows)}

    def close(self) -> None:
        self._client.close()
