"""The same requests to the Rust and the Python runtime get the same answers: status, error
code and field, the cache header, and the shape of successful bodies. Each runtime serves its
own session of the same stack; differences the contract documents are listed in KNOWN."""

from __future__ import annotations

import json

import pytest

from conftest import Api

GOOD = {"username": "ann", "email": "Ann@Example.com", "password": "password123", "full_name": "Ann A"}

# (method, path, body: dict | bytes | None, content type)
REQUESTS = [
    ("POST", "/api/users", GOOD, "application/json"),
    ("POST", "/api/users", {**GOOD, "username": "bob", "email": "bob@x.io"}, "application/json"),
    ("GET", "/api/users/1", None, None),
    ("GET", "/api/users/1", None, None),
    ("GET", "/api/users/99", None, None),
    ("GET", "/api/users?q=AN&limit=5&offset=0", None, None),
    ("GET", "/api/users?q=ann%40example.com", None, None),
    ("GET", "/api/users?limit=0", None, None),
    ("GET", "/api/users?limit=abc", None, None),
    ("GET", "/api/users?offset=-1", None, None),
    ("GET", "/api/users/abc", None, None),
    ("GET", "/api/users/0", None, None),
    ("POST", "/api/users", {**GOOD, "username": "ANN", "email": "c@x.io"}, "application/json"),
    ("POST", "/api/users", {**GOOD, "username": "cat", "email": "ANN@example.com"}, "application/json"),
    ("POST", "/api/users", {**GOOD, "admin": True}, "application/json"),
    ("POST", "/api/users", {"username": "bob"}, "application/json"),
    ("POST", "/api/users", b'{"username":"b\xff"}', "application/json"),
    ("POST", "/api/users", b"not json", "application/json"),
    ("POST", "/api/users", json.dumps(GOOD).encode(), "text/plain"),
    ("POST", "/api/users", {**GOOD, "username": "x" * 40}, "application/json"),
    ("POST", "/api/users", {**GOOD, "username": "dee", "email": "bad"}, "application/json"),
    ("POST", "/api/users", {**GOOD, "username": "dee", "email": "d@x.io", "password": "short"}, "application/json"),
    ("PATCH", "/api/users/1", {"full_name": "Ann B"}, "application/json"),
    ("PATCH", "/api/users/1", {}, "application/json"),
    ("PATCH", "/api/users/1", {"username": "bob"}, "application/json"),
    ("PATCH", "/api/users/99", {"full_name": "x"}, "application/json"),
    ("POST", "/api/users/1/verify-password", {"password": "password123"}, "application/json"),
    ("POST", "/api/users/1/verify-password", {"password": "wrong-password"}, "application/json"),
    ("POST", "/api/users/99/verify-password", {"password": "password123"}, "application/json"),
    ("POST", "/api/users/99/verify-password", {"password": "x" * 80}, "application/json"),
    ("GET", "/api/cache", None, None),
    ("PUT", "/api/cache/policy", {"policy": "lfu"}, "application/json"),
    ("PUT", "/api/cache/policy", {"policy": "nope"}, "application/json"),
    ("PUT", "/api/cache/policy", {"policy": "lru", "x": 1}, "application/json"),
    ("DELETE", "/api/cache", None, None),
    ("GET", "/api/analysis", None, None),
    ("POST", "/api/analysis/benchmark", {"reads": 0}, "application/json"),
    ("POST", "/api/analysis/benchmark", {"writes": 3000}, "application/json"),
    ("POST", "/api/analysis/benchmark", {"reads": 5, "writes": 5}, "application/json"),
    ("DELETE", "/api/users/2", None, None),
    ("DELETE", "/api/users/2", None, None),
    ("PUT", "/api/users", None, None),
    ("POST", "/api/users/1", None, None),
    ("GET", "/api/nothing", None, None),
    ("GET", "/nothing", None, None),
    ("GET", "/healthz", None, None),
    ("GET", "/api/users/", None, None),
    ("POST", "/graphql", {"query": "{ users { total items { id username fullName } } }"}, "application/json"),
    ("POST", "/graphql", {"query": "{ user(id: 99) { id } }"}, "application/json"),
    ("POST", "/graphql", {"query": "{ users { nope } }"}, "application/json"),
    ("POST", "/graphql", {"query": "{ users "}, "application/json"),
    ("POST", "/graphql", {"query": "{ " + " ".join(f"a{i}: users {{ total }}" for i in range(30)) + " }"}, "application/json"),
    ("POST", "/graphql", {"query": "{ users { items { id } } }" * 1}, "application/json"),
    ("POST", "/graphql", {"query": 'mutation { createUser(input: {username: "x", email: "x@x.io", password: "password123"}) { id } }'}, "application/json"),
    ("POST", "/graphql", {"query": 'mutation { createUser(input: {username: "eve", email: "eve@x.io", password: "password123"}) { id username } }'}, "application/json"),
    ("POST", "/graphql", {"query": "mutation { verifyPassword(id: 1, password: \"password123\") }"}, "application/json"),
    ("POST", "/graphql", {"query": "mutation { deleteUser(id: 99) }"}, "application/json"),
    ("POST", "/graphql", {"query": "query A { user(id: 1) { id } } query B { user(id: 1) { id } }"}, "application/json"),
    ("POST", "/graphql", {"query": "{ user(id: 1) { id } }", "operationName": "Nope"}, "application/json"),
    ("POST", "/api/users", {**GOOD, "username": 5}, "application/json"),
    ("POST", "/api/users", {**GOOD, "email": {"$gt": ""}}, "application/json"),
]

# Where the runtimes differ on purpose (CONTRACT.md): the wrong-type case names its field in
# Python only. Nothing else may differ.
KNOWN = {len(REQUESTS) - 2, len(REQUESTS) - 1}


def _shape(v):
    if isinstance(v, dict):
        return {k: _shape(x) for k, x in v.items() if k not in ("message", "locations")}
    if isinstance(v, list):
        return [_shape(x) for x in v[:1]]
    return type(v).__name__


def _answer(api: Api, method, path, body, ct):
    if isinstance(body, dict):
        raw = json.dumps(body).encode()
    else:
        raw = body
    h = {"x-stacklab-session": api.code}
    if ct:
        h["content-type"] = ct
    r = api.inst.request(method, path, raw, h)
    b = r.body
    out = {"status": r.status, "cache": r.headers.get("x-stacklab-cache"),
           "content-type": r.headers.get("content-type", "").split(";")[0]}
    if isinstance(b, dict) and "error" in b:
        out["error"] = {k: b["error"].get(k) for k in ("code", "field")}
    if isinstance(b, dict) and "errors" in b:
        out["errors"] = [{"path": e.get("path"), "extensions": e.get("extensions")} for e in b["errors"]]
    if r.status < 400 and isinstance(b, (dict, list)):
        out["shape"] = _shape(b)
    return out


@pytest.mark.parametrize("db,cache", [("sqlite", "memory"), ("postgres", "redis"), ("mysql", "memcached"), ("sqlite", "none")])
def test_same_requests_same_answers(python, rust, make_stack, db, cache):
    apis = {name: Api(inst, make_stack(db=db, cache=cache, password_storage="bcrypt")["session"])
            for name, inst in (("python", python), ("rust", rust))}
    differences = []
    for i, (method, path, body, ct) in enumerate(REQUESTS):
        got = {name: _answer(api, method, path, body, ct) for name, api in apis.items()}
        if got["python"] != got["rust"] and i not in KNOWN:
            differences.append((i, method, path, got["python"], got["rust"]))
    assert not differences, "\n".join(f"#{i} {m} {p}\n  python {a}\n  rust   {b}" for i, m, p, a, b in differences)
    # The known differences are what the contract says, no more.
    for i in KNOWN:
        method, path, body, ct = REQUESTS[i]
        got = {name: _answer(api, method, path, body, ct) for name, api in apis.items()}
        assert got["rust"]["error"] == {"code": "bad_request", "field": None}
        assert got["python"]["error"]["code"] == "bad_request" and got["python"]["error"]["field"] in body
