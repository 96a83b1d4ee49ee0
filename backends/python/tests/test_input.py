"""Bad input gets the contract's JSON error naming what is wrong, and changes nothing
(CONTRACT.md §4, §5, §7); Flask's HTML pages never reach a client."""

from __future__ import annotations

import json

import pytest

from conftest import Api


@pytest.fixture
def api(python, make_stack) -> Api:
    api = Api(python, make_stack()["session"])
    assert api.call("POST", "/api/users", {"username": "ann", "email": "ann@example.com",
                                           "password": "password123"}).status == 201
    return api


def rows(api: Api) -> int:
    return api.call("GET", "/api/analysis").body["database"]["rows"]


GOOD = {"username": "bob", "email": "b@x.io", "password": "password123"}

# What the case is, content type, body, status, code, field (None: no field asserted).
CASES = [
    ("unknown field", "application/json", json.dumps({**GOOD, "admin": True}), 400, "invalid", "admin"),
    ("missing field", "application/json", '{"username":"bob"}', 400, "invalid", "email"),
    ("duplicate field", "application/json", '{"username":"bob","username":"eve","email":"b@x.io","password":"password123"}', 400, "invalid", "username"),
    ("wrong type", "application/json", json.dumps({**GOOD, "username": 5}), 400, "bad_request", "username"),
    ("operator as email", "application/json", json.dumps({**GOOD, "email": {"$gt": ""}}), 400, "bad_request", "email"),
    ("array body", "application/json", "[]", 400, "bad_request", None),
    ("not JSON", "application/json", "username=bob", 400, "bad_request", None),
    ("trailing data", "application/json", json.dumps(GOOD) + " {}", 400, "bad_request", None),
    ("NaN", "application/json", '{"username":NaN}', 400, "bad_request", None),
    ("lone surrogate", "application/json", '{"username":"\\ud800x","email":"b@x.io","password":"password123"}', 400, "bad_request", None),
    ("empty body", "application/json", "", 400, "bad_request", None),
    ("too long", "application/json", json.dumps({**GOOD, "username": "b" * 40}), 400, "invalid", "username"),
    ("bad username", "application/json", json.dumps({**GOOD, "username": "bob'; DROP TABLE users; --"}), 400, "invalid", "username"),
    ("invalid email", "application/json", json.dumps({**GOOD, "email": "not-an-email"}), 400, "invalid", "email"),
    ("short password", "application/json", json.dumps({**GOOD, "password": "pw"}), 400, "invalid", "password"),
    ("password over 72 bytes", "application/json", json.dumps({**GOOD, "password": "é" * 37}), 400, "invalid", "password"),
    ("NUL in password", "application/json", json.dumps({**GOOD, "password": "long enough\u0000x"}), 400, "invalid", "password"),
    ("control char in name", "application/json", json.dumps({**GOOD, "full_name": "a\u0007b"}), 400, "invalid", "full_name"),
    ("taken username, other case", "application/json", json.dumps({**GOOD, "username": "ANN"}), 409, "conflict", "username"),
    ("taken email, other case", "application/json", json.dumps({**GOOD, "email": "Ann@Example.COM"}), 409, "conflict", "email"),
    ("wrong content type", "text/plain", json.dumps(GOOD), 415, "unsupported_media_type", None),
    ("no content type", None, json.dumps(GOOD), 415, "unsupported_media_type", None),
]


@pytest.mark.parametrize("what,ct,body,status,code,field", CASES, ids=[c[0] for c in CASES])
def test_bad_bodies_are_refused_clearly_and_change_nothing(api, what, ct, body, status, code, field):
    r = api.raw("POST", "/api/users", ct, body.encode())
    assert (r.status, r.code) == (status, code), r.raw
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.body["error"]["message"], str) and r.body["error"]["message"]
    if field is not None:
        assert r.field == field, r.raw
    assert rows(api) == 1


def test_invalid_utf8_and_oversized_bodies(api):
    r = api.raw("POST", "/api/users", "application/json", b'{"username":"b\xff\xfe","email":"b@x.io","password":"password123"}')
    assert (r.status, r.code) == (400, "bad_request")
    big = json.dumps({**GOOD, "full_name": "x" * 70_000}).encode()
    r = api.raw("POST", "/api/users", "application/json", big)
    assert (r.status, r.code) == (413, "body_too_large"), r.raw
    assert "65536" in r.body["error"]["message"]
    # Past what the server reads at all (16 MiB), the answer comes as soon as the length is
    # known, and is still the JSON 413.
    import socket

    with socket.create_connection(("127.0.0.1", api.inst.port), timeout=10) as s:
        s.sendall(f"POST /api/users HTTP/1.1\r\nHost: x\r\nx-stacklab-session: {api.code}\r\n"
                  f"content-type: application/json\r\ncontent-length: {17 << 20}\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, raw = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head, answer[:300]
    assert json.loads(raw)["error"]["code"] == "body_too_large"
    assert rows(api) == 1


def test_query_and_path_parameters_are_checked(api):
    for path, field in [("/api/users?limit=1000", "limit"), ("/api/users?limit=0", "limit"),
                        ("/api/users?limit=x", "limit"), ("/api/users?offset=-1", "offset"),
                        ("/api/users?q=" + "a" * 255, "q"), ("/api/users?q=a%00b", "q"),
                        ("/api/users/abc", "id"), ("/api/users/0", "id"), ("/api/users/-3", "id"),
                        ("/api/users/1%20OR%201=1", "id")]:
        r = api.call("GET", path)
        assert (r.status, r.code, r.field) == (400, "invalid", field), (path, r.raw)
    r = api.call("GET", "/api/users?limit=%2B1&q=%25")
    assert r.status == 200 and r.body["limit"] == 1 and r.body["total"] == 0, "a % is text, not a wildcard"
    r = api.call("GET", "/api/users?q=AN")
    assert r.body["total"] == 1


def test_routes_methods_and_error_pages_are_json(api, python):
    expect = [
        ("GET", "/nothing", 404, "not_found"), ("POST", "/healthz", 404, "not_found"),
        ("GET", "/api/nothing", 404, "not_found"), ("PUT", "/api/users", 405, "method_not_allowed"),
        ("POST", "/api/users/1", 405, "method_not_allowed"), ("POST", "/api/cache", 405, "method_not_allowed"),
        ("PUT", "/graphql", 405, "method_not_allowed"), ("GET", "/api/cache/policy", 404, "not_found"),
        ("HEAD", "/api/users", 405, "method_not_allowed"), ("OPTIONS", "/api/users", 405, "method_not_allowed"),
        ("OPTIONS", "/healthz", 404, "not_found"), ("GET", "/api/users/", 200, None),
        ("GET", "//api/users", 200, None), ("GET", "/api//users", 404, "not_found"),
    ]
    for method, path, status, code in expect:
        r = api.call(method, path)
        assert r.status == status, (method, path, r.raw)
        if method != "HEAD":
            assert r.code == code, (method, path, r.raw)
            assert r.headers["content-type"] == "application/json", (method, path)
        assert "server-timing" in r.headers
    # A request the HTTP parser itself refuses is JSON too.
    r = python.request("GET", "/healthz", headers={"Content-Length": "x"})
    assert r.status == 400 and r.code == "bad_request", r.raw


def test_session_header_and_expired_sessions(python):
    r = python.request("GET", "/api/users")
    assert (r.status, r.code) == (401, "session_missing")
    for code in ["short", "bad code!" * 3, "x" * 65]:
        r = Api(python, code).call("GET", "/api/users")
        assert (r.status, r.code) == (410, "session_expired"), code
    r = Api(python, "NOSUCHSESSION0000000000000").call("GET", "/api/users")
    assert (r.status, r.code) == (410, "session_expired")
    assert "POST /api/sessions" in r.body["error"]["message"]


def test_internal_endpoint_needs_the_credential(python, control, make_stack):
    d = make_stack()
    api = Api(python, d["session"])
    assert api.call("POST", "/api/users", GOOD).status == 201
    path = f"/internal/sessions/{d['session']}"
    r = python.request("DELETE", path)
    assert (r.status, r.code, r.headers.get("www-authenticate")) == (401, "unauthorized", "Bearer")
    r = python.request("DELETE", path, headers={"Authorization": "Basic abc"})
    assert (r.status, r.code, r.headers.get("www-authenticate")) == (401, "unauthorized", "Bearer")
    r = python.request("DELETE", path, headers={"Authorization": "Bearer wrong"})
    assert (r.status, r.code) == (403, "forbidden")
    assert control.credential not in r.raw.decode()
    # The in-process cache holds user 1; forgetting the session drops it with the connections.
    assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "miss"
    assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "hit"
    r = python.request("DELETE", path, headers={"Authorization": f"Bearer {control.credential}"})
    assert (r.status, r.body) == (200, {"closed": d["session"]})
    assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "miss"


def test_graphql_limits_and_error_shapes(api, start_python, make_stack):
    aliases = " ".join(f"a{i}: users {{ total }}" for i in range(150))
    r = api.graphql(f"{{ {aliases} }}")
    assert r.status == 400 and r.field == "query" and r.code == "invalid"
    assert "complex" in r.body["errors"][0]["message"].lower() and r.body["data"] is None
    typenames = " ".join(f"t{i}: __typename" for i in range(600))
    r = api.graphql(f"{{ {typenames} }}")
    assert r.status == 400 and "600 fields" in r.body["error"]["message"], r.raw
    r = api.graphql("{ users { items { id } } }")
    assert r.status == 200 and r.body == {"data": {"users": {"items": [{"id": 1}]}}}
    r = api.graphql("{ user(id: 999) { id } }")
    assert r.status == 200 and r.body["data"] is None
    assert r.body["errors"][0]["extensions"] == {"code": "not_found"} and r.body["errors"][0]["path"] == ["user"]
    r = api.graphql('mutation { createUser(input: {username: "x", email: "x@x.io", password: "password123"}) { id } }')
    assert r.status == 200 and r.body["errors"][0]["extensions"] == {"code": "invalid", "field": "username"}
    for bad in ["{ users { nope } }", "{ users ", "", "query($id: Int!) { user(id: $id) { id } }"]:
        r = api.graphql(bad)
        assert (r.status, r.code, r.field) == (400, "invalid", "query"), (bad, r.raw)
        assert r.body["data"] is None and r.body["errors"]
    r = api.call("POST", "/graphql", {"query": 5})
    assert (r.status, r.code) == (400, "bad_request") and "errors" not in r.body
    r = api.graphql("{" * 20_000 + "}" * 20_000)
    assert r.status == 400 and r.field == "query"
    # 64-bit Int: createdAt is Unix milliseconds.
    r = api.graphql("{ user(id: 1) { createdAt fullName storedPassword } }")
    assert r.status == 200 and r.body["data"]["user"]["createdAt"] > 2**31
    # POST only: no GraphiQL page (it loaded its scripts from a public CDN).
    r = api.call("GET", "/graphql")
    assert (r.status, r.code) == (405, "method_not_allowed"), r.raw
    # Depth: a limit from the config.
    inst = start_python("graphql_max_depth = 2\nbcrypt_cost = 4")
    small = Api(inst, api.code)
    r = small.graphql("{ users { items { id } } }")
    assert r.status == 400 and "deep" in r.body["errors"][0]["message"], r.raw
    assert small.graphql("{ users { total } }").status == 200


@pytest.mark.parametrize("query,complexity,depth", [
    ("{ users { total } }", 10, 2),
    ("{ users { items { id username } } }", 30, 3),
    ("{ user(id: 1) { id } }", 2, 2),
    ("{ __typename user(id: 1) { __typename id } }", 2, 2),
    ("query { ...F } fragment F on Query { user(id: 1) { id ...G } } fragment G on User { email }", 3, 2),
    ("mutation { deleteUser(id: 1) }", 1, 1),
    ("{ a: users { total } b: users { total } } query Q { user(id: 1) { id } }", 22, 2),
])
def test_complexity_and_depth_count_as_async_graphql_does(query, complexity, depth):
    from graphql import parse

    from stacklab_python.gql import complexity_and_depth

    assert complexity_and_depth(parse(query)) == (complexity, depth)


def fragment_bomb(levels: int, leaf_a: str = "users { total }", leaf_b: str = "users { items { id } }") -> str:
    """2 × ``levels`` + 2 fragments, A_i and B_i each spreading both A_{i+1} and B_{i+1}: a few
    KB standing for 2^levels spreads of the leaves."""
    q = "{ ...A0 }\n"
    for i in range(levels):
        q += f"fragment A{i} on Query {{ ...A{i + 1} ...B{i + 1} }}\nfragment B{i} on Query {{ ...A{i + 1} ...B{i + 1} }}\n"
    return q + f"fragment A{levels} on Query {{ {leaf_a} }}\nfragment B{levels} on Query {{ {leaf_b} }}\n"


def test_fragment_bombs_are_counted_once_per_fragment():
    """The counts take each fragment once: exact numbers for a document whose spreads could
    not be walked one by one (2^200), so a count that walked them would never answer."""
    from graphql import parse

    from stacklab_python.gql import COUNTLESS, complexity_and_depth, count_fields, count_spread_fields

    doc = parse(fragment_bomb(24))
    assert count_fields(doc) == 2 + 3  # written out: the two leaves
    # Leaves of 2 and 3 fields, spread 2^23 times each.
    assert count_spread_fields(doc) == 5 * 2**23
    # users { total } = 10, users { items { id } } = 20; deepest chain users.items.id.
    assert complexity_and_depth(doc) == (30 * 2**23, 3)
    huge = parse(fragment_bomb(200))
    assert count_spread_fields(huge) == COUNTLESS
    assert complexity_and_depth(huge) == (30 * 2**199, 3)
    # A cycle counts 0 where it closes, and ends.
    cycle = parse("{ ...A } fragment A on Query { users { total } ...B } fragment B on Query { ...A }")
    assert count_spread_fields(cycle) == 2 and complexity_and_depth(cycle) == (10, 2)


class Untouchable(dict):
    """A GraphQL context that fails the test if a resolver reaches for the session."""

    def __getitem__(self, key):
        raise AssertionError(f"the query ran (it read {key!r} from the context)")


@pytest.mark.parametrize("query,message", [
    (fragment_bomb(24), "the query selects 41943040 fields once its fragments are spread"),
    (fragment_bomb(70), "the query selects countless fields once its fragments are spread"),
    # Nothing to count once spread: validation refuses what remains, still without expanding.
    (fragment_bomb(24, "...Nope", "...Nope"), "Unknown fragment 'Nope'."),
    (fragment_bomb(24, "...A0", "...B0"), "Cannot spread fragment"),
    ("{ ...A } fragment A on Query { users { total } ...B } fragment B on Query { ...A }",
     "Cannot spread fragment"),
])
def test_fragment_bombs_are_refused_before_anything_runs(query, message):
    from stacklab_python import gql
    from stacklab_python.config import Limits

    out = gql.run(Limits(), query, None, None, Untouchable())
    assert out.refused and out.response["data"] is None, out.response
    assert out.response["errors"][0]["message"].startswith(message), out.response


def test_a_fragment_bomb_gets_the_refusal_and_the_instance_goes_on(api):
    r = api.graphql(fragment_bomb(24))
    assert (r.status, r.code, r.field) == (400, "invalid", "query"), r.raw
    assert r.body["data"] is None
    assert "41943040 fields once its fragments are spread" in r.body["error"]["message"], r.raw
    assert "x-stacklab-cache" not in r.headers  # no user was read
    r = api.graphql("{ users { total } }")
    assert r.status == 200 and r.body == {"data": {"users": {"total": 1}}}, r.raw
