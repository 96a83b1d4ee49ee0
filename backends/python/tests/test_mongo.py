"""MongoDB documents in the contract's format (CONTRACT.md §10, what the Rust runtime's
``storage/mongo.rs`` writes), checked with the engine's own client: Int64 ids from the
``counters`` document, the two unique indexes, and documents written in that format by another
writer read back (the Rust runtime does not serve MongoDB yet, so it cannot be that writer)."""

from __future__ import annotations

import pymongo
from bson.int64 import Int64

from conftest import Api


def test_documents_ids_and_indexes_are_the_contracts(python, make_stack):
    d = make_stack(db="mongodb", cache="none", password_storage="sha256", encryption="aes-256-gcm")
    api = Api(python, d["session"])
    for name in ("ann", "bob"):
        r = api.call("POST", "/api/users", {"username": name, "email": f"{name}@Example.com",
                                            "password": "password123", "full_name": name.title()})
        assert r.status == 201, r.raw
    r = api.call("POST", "/api/users", {"username": "ANN", "email": "x@x.io", "password": "password123"})
    assert (r.status, r.field) == (409, "username")
    r = api.call("POST", "/api/users", {"username": "cat", "email": "ANN@example.COM", "password": "password123"})
    assert (r.status, r.field) == (409, "email")
    with pymongo.MongoClient(d["database"]["url"], serverSelectionTimeoutMS=5000) as client:
        db = client[d["database"]["database"]]
        raw = db.users.find_one({"_id": 1})
        # (The runtime writes Int64; a SQLite-backed wire-compatible stand-in hands every
        # number back as Int32, so the width cannot be asserted here, only the values.)
        assert all(isinstance(raw[k], int) for k in ("_id", "created_at", "updated_at"))
        assert set(raw) == {"_id", "username", "username_key", "email", "email_key", "full_name", "password",
                            "created_at", "updated_at"}
        assert raw["username_key"] == "ann" and len(raw["email_key"]) == 64 and raw["email"].startswith("v1:")
        counter = db.counters.find_one({"_id": "users"})
        assert isinstance(counter["seq"], int) and counter["seq"] >= 2
        # By key: the stand-in names its indexes itself (MongoDB keeps `users_<key>`).
        indexes = {tuple(ix["key"]): ix for ix in db.users.list_indexes()}
        for key in ("username_key", "email_key"):
            assert indexes[(key,)].get("unique") is True, indexes
        # A document another writer put there in the same format is served like our own.
        mine = api.call("GET", "/api/users/1").body
        doc = {**raw, "_id": Int64(100), "username": "Dee", "username_key": "dee",
               "email_key": "0" * 64, "created_at": Int64(5), "updated_at": Int64(6)}
        db.users.insert_one(doc)
    got = api.call("GET", "/api/users/100")
    assert got.status == 200, got.raw
    assert (got.body["username"], got.body["email"], got.body["full_name"]) == ("Dee", mine["email"], mine["full_name"])
    assert api.call("GET", "/api/users?q=DE").body["total"] == 1
    assert api.call("GET", "/api/users?q=ann%40example.com").body["items"][0]["id"] == 1
    r = api.call("PATCH", "/api/users/1", {"username": "anne"})
    assert r.status == 200 and r.body["username"] == "anne"
    assert api.call("DELETE", "/api/users/2").status == 200
    assert api.call("GET", "/api/analysis").body["database"]["rows"] == 2


def test_operator_values_stay_strings(python, make_stack):
    d = make_stack(db="mongodb", cache="memory")
    api = Api(python, d["session"])
    assert api.call("POST", "/api/users", {"username": "ann", "email": "a@x.io", "password": "password123"}).status == 201
    for q in ("%24gt", ".*", "%5E", "a%7C.*"):
        assert api.call("GET", f"/api/users?q={q}").body["total"] == 0, q
    assert api.call("GET", "/api/users?q=a").body["total"] == 1
