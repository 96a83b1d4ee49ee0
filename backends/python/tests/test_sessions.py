"""One instance, many sessions (CONTRACT.md §3, §14): descriptors cached for descriptor_ttl and
fetched again after, a session control no longer knows answered 410, at most max_sessions open
(the least recently used closed), idle ones closed, sessions kept apart."""

from __future__ import annotations

from conftest import Api, wait_until

GOOD = {"username": "ann", "email": "ann@x.io", "password": "password123"}


def test_descriptor_is_cached_then_fetched_again(start_python, control, make_stack):
    inst = start_python("descriptor_ttl_ms = 300\nbcrypt_cost = 4")
    d = make_stack()
    api = Api(inst, d["session"])
    assert api.call("POST", "/api/users", GOOD).status == 201
    for _ in range(5):
        assert api.call("GET", "/api/users/1").status == 200
    assert control.fetches[d["session"]] == 1, "within the TTL the descriptor is not fetched again"
    # After the TTL it is fetched again; the same stack keeps its connections and its cache.
    wait_until("a second fetch", lambda: api.call("GET", "/api/users/1") and control.fetches[d["session"]] >= 2)
    assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "hit"
    # Control forgets the session: once the TTL has run out the instance answers 410.
    control.remove(d["session"])
    r = wait_until("410 after control forgot the session", lambda: (
        r := api.call("GET", "/api/users/1")).status == 410 and r)
    assert r.code == "session_expired"


def test_max_sessions_closes_the_least_recently_used(start_python, make_stack):
    inst = start_python("max_sessions = 2\nbcrypt_cost = 4")
    apis = [Api(inst, make_stack()["session"]) for _ in range(3)]
    for api in apis[:2]:
        assert api.call("POST", "/api/users", GOOD).status == 201
        assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "miss"
        assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "hit"
    apis[1].call("GET", "/api/users/1")  # session 0 is now the least recently used
    assert apis[2].call("POST", "/api/users", GOOD).status == 201
    # Session 0 was closed (its in-process cache with it); session 1 was kept.
    assert apis[1].call("GET", "/api/users/1").headers["x-stacklab-cache"] == "hit"
    assert apis[0].call("GET", "/api/users/1").headers["x-stacklab-cache"] == "miss"
    assert apis[0].call("GET", "/api/users/1").body["username"] == "ann", "the data is the database's"


def test_idle_sessions_are_closed(start_python, make_stack):
    inst = start_python("session_idle_ms = 200\nbcrypt_cost = 4")
    api = Api(inst, make_stack()["session"])
    assert api.call("POST", "/api/users", GOOD).status == 201
    assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "miss"
    assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "hit"
    # Once idle past session_idle the session is closed by the sweep: its cache is gone.
    wait_until("the idle session closed", lambda: any("closed: idle" in line for line in inst.stderr_lines))
    assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "miss"


def test_sessions_are_isolated_on_one_instance(python, make_stack):
    a, b = Api(python, make_stack()["session"]), Api(python, make_stack()["session"])
    assert a.call("POST", "/api/users", GOOD).status == 201
    assert b.call("POST", "/api/users", GOOD).status == 201, "the same username in another session"
    assert a.call("GET", "/api/users").body["total"] == 1
    assert b.call("DELETE", "/api/users/1").status == 200
    assert a.call("GET", "/api/users/1").status == 200
    assert b.call("GET", "/api/users/1").status == 404


def test_an_engine_that_cannot_be_reached_is_a_503_naming_it(python, control, make_stack):
    d = make_stack()
    d["database"] = {"engine": "postgres", "url": "postgres://u:secretpw@127.0.0.1:1/x"}
    control.add(d)
    r = Api(python, d["session"]).call("GET", "/api/users")
    assert (r.status, r.code) == (503, "unavailable"), r.raw
    assert r.body["error"]["message"].startswith("postgres is unavailable")
    assert "secretpw" not in r.raw.decode()
    d = make_stack()
    d["cache"] = {"engine": "redis", "url": "redis://:secretpw@127.0.0.1:1/0", "key_prefix": "p:"}
    control.add(d)
    r = Api(python, d["session"]).call("GET", "/api/users")
    assert (r.status, r.code) == (503, "unavailable"), r.raw
    assert "the cache is unavailable: Redis at 127.0.0.1:1" in r.body["error"]["message"]
    assert "secretpw" not in r.raw.decode()
    assert "secretpw" not in "".join(python.stderr_lines)
