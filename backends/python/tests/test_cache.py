"""Cache semantics (CONTRACT.md §13): the in-process policies with a clock the test moves, the
policy switched live through the API, write policies, and Redis / Memcached / none as their
engines are (a shared Redis refuses a policy change with 409; Memcached lists its items)."""

from __future__ import annotations

import pytest

from conftest import Api, require_env
from stacklab_python.cache.memory import DEFAULT_MAX_BYTES, MemoryCache
from stacklab_python.errors import UnknownPolicy


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


VAL = b"12345678"  # ten bytes per entry with a two-byte key


def keys(c: MemoryCache) -> list[str]:
    return sorted(i["key"] for i in c.items(20))


def test_defaults_are_lru_and_one_mebibyte():
    c = MemoryCache("")
    info = c.policy()
    assert (info["policy"], info["policies"], info["changeable"]) == ("lru", ["lru", "lfu", "fifo", "ttl"], True)
    assert c.stats()["max_bytes"] == DEFAULT_MAX_BYTES
    with pytest.raises(UnknownPolicy):
        MemoryCache("random")


def test_lru_evicts_the_least_recently_used():
    c = MemoryCache("lru", 30)
    for k in ("k1", "k2", "k3"):
        c.set(k, VAL, None)
    assert c.get("k1") is not None
    c.set("k4", VAL, None)
    assert keys(c) == ["k1", "k3", "k4"]
    assert c.stats()["evictions"] == 1


def test_lfu_evicts_the_least_frequently_used():
    c = MemoryCache("lfu", 30)
    for k in ("k1", "k2", "k3"):
        c.set(k, VAL, None)
    for _ in range(3):
        c.get("k1")
    c.get("k2")
    # k3 is the most recently written but used once: LRU would keep it, LFU drops it.
    c.set("k4", VAL, None)
    assert keys(c) == ["k1", "k2", "k4"]


def test_fifo_evicts_the_first_written_whatever_was_read():
    c = MemoryCache("fifo", 30)
    for k in ("k1", "k2", "k3"):
        c.set(k, VAL, None)
    c.get("k1")
    c.set("k4", VAL, None)
    assert keys(c) == ["k2", "k3", "k4"]


def test_ttl_evicts_the_closest_to_expiry_and_no_ttl_last():
    clock = Clock()
    c = MemoryCache("ttl", 30, clock=clock)
    c.set("k1", VAL, None)
    c.set("k2", VAL, 60)
    c.set("k3", VAL, 10)
    c.set("k4", VAL, 30)
    assert keys(c) == ["k1", "k2", "k4"]
    c.set("k5", VAL, 90)
    assert keys(c) == ["k1", "k2", "k5"]
    c.set("k6", VAL, 120)
    c.set("k7", VAL, 150)
    # Only entries with a TTL have gone so far, however old k1 (no TTL) is.
    assert keys(c) == ["k1", "k6", "k7"]
    c.set("k8", VAL, None)
    assert keys(c) == ["k1", "k7", "k8"]
    c.set("k9", VAL, None)
    assert keys(c) == ["k1", "k8", "k9"]
    # Nothing with a TTL is left: the least recently used of the rest goes.
    c.get("k1")
    c.set("ka", VAL, None)
    assert keys(c) == ["k1", "k9", "ka"]
    assert c.stats()["evictions"] == 7


def test_policy_switch_at_run_time_changes_the_next_victim():
    c = MemoryCache("lru", 30)
    for k in ("k1", "k2", "k3"):
        c.set(k, VAL, None)
    c.get("k1")
    # Under LRU the victim would be k2; under FIFO it is k1.
    c.set_policy("fifo")
    assert c.policy()["policy"] == "fifo"
    c.set("k4", VAL, None)
    assert keys(c) == ["k2", "k3", "k4"]
    c.set_policy(" LRU ")
    c.get("k3")
    c.set("k5", VAL, None)
    assert keys(c) == ["k3", "k4", "k5"]
    with pytest.raises(UnknownPolicy, match="lru, lfu, fifo, ttl"):
        c.set_policy("allkeys-lru")
    assert c.policy()["policy"] == "lru"


def test_entries_expire_at_their_ttl():
    clock = Clock()
    c = MemoryCache("", 0, 5.0, clock=clock)
    c.set("default", VAL, None)
    c.set("short", VAL, 1)
    c.set("long", VAL, 60)
    assert [(i["key"], i["ttl_ms"]) for i in c.items(20)] == [("long", 60_000), ("short", 1_000), ("default", 5_000)]
    clock.now += 0.999
    assert c.get("short") is not None
    clock.now += 0.001
    assert c.get("short") is None
    clock.now += 4
    assert c.get("default") is None
    assert keys(c) == ["long"]
    assert c.items(20)[0]["ttl_ms"] == 55_000
    # Expired entries no longer count against the bound, and expiry is not an eviction.
    assert (c.stats()["bytes"], c.stats()["evictions"]) == (4 + 8, 0)


def test_counts_hits_misses_bytes_and_evictions():
    c = MemoryCache("lru", 25)
    assert c.get("k1") is None
    c.set("k1", VAL, None)
    assert c.get("k1") == VAL and c.get("k1") == VAL
    c.set("k2", VAL, None)
    c.set("k3", VAL, None)
    c.set("k3", b"123", None)  # an overwrite replaces the old size
    assert c.stats() == {"hits": 2, "misses": 1, "evictions": 1, "bytes": 10 + 5, "max_bytes": 25}
    c.set("huge", bytes(64), None)  # too big to ever fit: not kept, nothing evicted for it
    assert c.get("huge") is None
    c.delete("k2")
    c.delete("absent")
    s = c.stats()
    assert (s["hits"], s["misses"], s["evictions"], s["bytes"]) == (2, 2, 1, 5)
    c.flush()
    assert c.items(20) == [] and c.stats()["bytes"] == 0 and c.stats()["hits"] == 2


def test_items_are_newest_first_capped_with_previews():
    c = MemoryCache("")
    for i in range(30):
        c.set(f"key{i:02}", f"value {i}".encode(), None)
    c.get("key03")
    items = c.items(100)
    assert len(items) == 20
    assert [i["key"] for i in items[:4]] == ["key03", "key29", "key28", "key27"]
    assert (items[0]["value_preview"], items[0]["bytes"]) == ("value 3", 5 + 7)
    c.set("long", b"x" * 500, None)
    assert (len(c.items(1)[0]["value_preview"]), c.items(1)[0]["bytes"]) == (120, 504)


def test_many_operations_keep_the_bound_and_the_order():
    """Stale heap ranks (every read pushes one) never pick a wrong victim or grow without end."""
    c = MemoryCache("lru", 10 * 100)
    for _ in range(50):
        for i in range(100):
            c.set(f"k{i:02}", VAL, None)
            c.get(f"k{(i * 7) % 100:02}")
        assert c.stats()["bytes"] <= 1000
    assert len(c._victims) <= 2 * len(c._entries) + 64


# --- through the API ---------------------------------------------------------------------------

def _users(api: Api, n: int) -> None:
    for i in range(n):
        r = api.call("POST", "/api/users", {"username": f"user{i}", "email": f"u{i}@x.io", "password": "password123"})
        assert r.status == 201, r.raw


def test_policy_switch_through_the_api_changes_what_is_evicted(python, make_stack, control):
    # Room for three cached users (about 141 bytes each), not four.
    d = make_stack(cache="memory", max_bytes=450)
    api = Api(python, d["session"])
    _users(api, 4)
    for i in (1, 2, 3):
        assert api.call("GET", f"/api/users/{i}").headers["x-stacklab-cache"] == "miss"
    assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "hit"
    r = api.call("PUT", "/api/cache/policy", {"policy": "FIFO"})
    assert r.status == 200 and r.body["policy"] == "fifo", r.raw
    assert control.policies == [(d["session"], "fifo")], "control is told the canonical name"
    api.call("GET", "/api/users/4")  # FIFO evicts user 1 although it was read last
    cached = {i["key"] for i in api.call("GET", "/api/cache").body["items"]}
    assert cached == {"user:2", "user:3", "user:4"}, cached
    r = api.call("PUT", "/api/cache/policy", {"policy": "sometimes"})
    assert (r.status, r.code, r.field) == (400, "invalid", "policy")
    assert api.call("PUT", "/api/cache/policy", {"policy": 3}).status == 400
    view = api.call("DELETE", "/api/cache").body
    assert view["items"] == [] and view["stats"]["evictions"] == 1, "a flush keeps the counters"


@pytest.mark.parametrize("cache", ["memory", "redis", "memcached", "none"])
def test_write_policies_and_outcomes(python, make_stack, cache):
    for policy in ("cache-aside", "write-through"):
        d = make_stack(cache=cache, write_policy=policy)
        api = Api(python, d["session"])
        _users(api, 1)
        first = api.call("GET", "/api/users/1").headers["x-stacklab-cache"]
        if cache == "none":
            assert first == "bypass"
            continue
        assert first == ("hit" if policy == "write-through" else "miss"), (cache, policy)
        assert api.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "hit"
        api.call("PATCH", "/api/users/1", {"full_name": "New Name"})
        r = api.call("GET", "/api/users/1")
        assert r.headers["x-stacklab-cache"] == ("hit" if policy == "write-through" else "miss")
        assert r.body["full_name"] == "New Name", "never a stale entry after a write"
        view = api.call("GET", "/api/cache").body
        assert [i["key"] for i in view["items"]] == ["user:1"], view
        assert view["items"][0]["value_preview"].startswith('{"id":1,"username":"user0"')
        api.call("DELETE", "/api/users/1")
        assert api.call("GET", "/api/users/1").status == 404
        assert api.call("GET", "/api/cache").body["items"] == []


def test_redis_policy_own_server_changes_it_shared_server_refuses(python, make_stack):
    import redis

    url = require_env("STACKLAB_TEST_REDIS_URL")
    r = redis.Redis.from_url(url)
    own = make_stack(cache="redis", shared=False)
    api = Api(python, own["session"])
    resp = api.call("PUT", "/api/cache/policy", {"policy": "allkeys-lfu"})
    try:
        assert resp.status == 200 and resp.body["policy"] == "allkeys-lfu", resp.raw
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lfu"
        assert api.call("PUT", "/api/cache/policy", {"policy": "lru"}).field == "policy"
        shared = Api(python, make_stack(cache="redis", shared=True)["session"])
        view = shared.call("GET", "/api/cache").body
        assert view["changeable"] is False and "shared" in view["note"]
        resp = shared.call("PUT", "/api/cache/policy", {"policy": "allkeys-lru"})
        assert (resp.status, resp.code) == (409, "refused") and "shared" in resp.body["error"]["message"]
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lfu", "the refusal changed nothing"
    finally:
        r.config_set("maxmemory-policy", "noeviction")


def test_redis_and_memcached_keep_to_their_prefix(python, make_stack):
    for cache in ("redis", "memcached"):
        a = make_stack(cache=cache)
        b = make_stack(cache=cache)
        api_a, api_b = Api(python, a["session"]), Api(python, b["session"])
        _users(api_a, 2)
        _users(api_b, 1)
        for i in (1, 2):
            api_a.call("GET", f"/api/users/{i}")
        api_b.call("GET", "/api/users/1")
        from conftest import wait_until

        # memcached's LRU crawler lists new items within a moment.
        listed = wait_until(f"{cache} lists both items", lambda api=api_a: (
            {i["key"] for i in api.call("GET", "/api/cache").body["items"]} == {"user:1", "user:2"}))
        assert listed
        assert api_a.call("DELETE", "/api/cache").body["items"] == []
        assert api_b.call("GET", "/api/users/1").headers["x-stacklab-cache"] == "hit", "the other session's entry stayed"
        if cache == "memcached":
            view = api_a.call("GET", "/api/cache").body
            assert (view["policy"], view["changeable"]) == ("lru", False)
            resp = api_a.call("PUT", "/api/cache/policy", {"policy": "lru"})
            assert (resp.status, resp.code) == (409, "refused")


def test_no_cache_has_no_policy(python, make_stack):
    api = Api(python, make_stack(cache="none")["session"])
    view = api.call("GET", "/api/cache").body
    assert (view["engine"], view["policy"], view["policies"], view["items"]) == ("none", "none", [], [])
    r = api.call("PUT", "/api/cache/policy", {"policy": "lru"})
    assert (r.status, r.code) == (409, "refused")
    assert api.call("DELETE", "/api/cache").status == 200
