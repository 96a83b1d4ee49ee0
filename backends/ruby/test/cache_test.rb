# frozen_string_literal: true

require_relative "test_helper"
require "stacklab/cache"

# The in-process cache's four policies (CONTRACT.md §13), on a clock the test moves; then the
# policy endpoints over Redis and Memcached through a running instance.
class MemoryCacheTest < Minitest::Test
  parallelize_me!

  def cache(policy, max_bytes = 30)
    @now = 0.0
    Stacklab::Cache::Memory.new(policy: policy, max_bytes: max_bytes, clock: -> { @now })
  end

  # Three 10-byte entries fill 30 bytes; the fourth evicts one.
  def fill(c, ttls = [nil, nil, nil])
    %w[k1 k2 k3].zip(ttls).each { |k, t| c.set(k, "v" * 8, t) }
  end

  def keys(c) = c.items.map { |i| i["key"] }.sort

  def test_lru_evicts_the_least_recently_used
    c = cache("lru")
    fill(c)
    c.get("k1")
    c.set("k4", "v" * 8, nil)
    assert_equal %w[k1 k3 k4], keys(c)
    assert_equal 1, c.stats["evictions"]
  end

  def test_lfu_evicts_the_least_used_ties_by_recency
    c = cache("lfu")
    fill(c)
    c.get("k1")
    c.get("k1")
    c.get("k2")
    c.set("k4", "v" * 8, nil)
    assert_equal %w[k1 k2 k4], keys(c)
  end

  def test_fifo_ignores_reads
    c = cache("fifo")
    fill(c)
    c.get("k1")
    c.set("k4", "v" * 8, nil)
    assert_equal %w[k2 k3 k4], keys(c)
  end

  def test_ttl_evicts_the_nearest_expiry_and_entries_without_go_last
    c = cache("ttl")
    fill(c, [nil, 5000, 1000])
    c.set("k4", "v" * 8, nil)
    assert_equal %w[k1 k2 k4], keys(c)
  end

  def test_expired_entries_are_gone_not_evicted_and_switching_keeps_entries
    c = cache(" LRU ", 1000)
    c.set("a", "x", 1000)
    c.set("b", "y", nil)
    @now = 1.5
    assert_nil c.get("a")
    assert_equal ["b"], keys(c)
    assert_equal 0, c.stats["evictions"]
    c.set_policy("FIFO")
    assert_equal "fifo", c.policy["policy"]
    assert_equal ["b"], keys(c)
    assert_raises(Stacklab::UnknownPolicy) { c.set_policy("random") }
  end

  def test_a_value_larger_than_the_bound_is_not_kept_and_removes_the_old_one
    c = cache("lru", 20)
    c.set("k", "small", nil)
    c.set("k", "v" * 30, nil)
    assert_nil c.get("k")
    assert_equal 0, c.stats["bytes"]
  end
end

class CacheEndpointsTest < StackTest
  def test_redis_policy_changes_show_in_redis_and_reach_control
    url = Stack.engine(self, "STACKLAB_TEST_REDIS_URL")
    i = instance
    prefix = "rbtest:#{SecureRandom.hex(4)}:"
    s = session(sqlite_descriptor(cache: { "engine" => "redis", "url" => url, "key_prefix" => prefix }))
    status, body, = i.request("PUT", "/api/cache/policy", body: { "policy" => " ALLKEYS-LFU " }, session: s)
    assert_equal [200, "allkeys-lfu"], [status, body["policy"]]
    assert_equal [[s, "allkeys-lfu"]], @control.policy_changes
    status, body, = i.request("PUT", "/api/cache/policy", body: { "policy" => "lru" }, session: s)
    assert_equal [400, "policy"], [status, body["error"]["field"]]
    i.request("PUT", "/api/cache/policy", body: { "policy" => "noeviction" }, session: s)

    shared = session(sqlite_descriptor(cache: { "engine" => "redis", "url" => url, "key_prefix" => "#{prefix}b:", "shared" => true }))
    status, body, = i.request("PUT", "/api/cache/policy", body: { "policy" => "allkeys-lru" }, session: shared)
    assert_equal [409, "refused"], [status, body["error"]["code"]]
    _, view, = i.request("GET", "/api/cache", session: shared)
    assert_equal false, view["changeable"]
    assert_includes view["note"], "shared"
  end

  def test_memcached_lists_the_sessions_items_and_refuses_policies
    addr = Stack.engine(self, "STACKLAB_TEST_MEMCACHED_ADDR")
    i = instance
    s = session(sqlite_descriptor(cache: { "engine" => "memcached", "url" => addr, "key_prefix" => "rb#{SecureRandom.hex(4)}:" }))
    _, user, = i.request("POST", "/api/users", body: { "username" => "mem", "email" => "m@example.com", "password" => "password1" }, session: s)
    i.request("GET", "/api/users/#{user['id']}", session: s)
    _, _, res = i.request("GET", "/api/users/#{user['id']}", session: s)
    assert_equal "hit", res["x-stacklab-cache"]
    _, view, = i.request("GET", "/api/cache", session: s)
    assert_equal ["user:#{user['id']}"], view["items"].map { |it| it["key"] }
    assert_operator view["items"][0]["ttl_ms"], :>, 290_000
    assert_equal 409, i.request("PUT", "/api/cache/policy", body: { "policy" => "lru" }, session: s)[0]
    _, view, = i.request("DELETE", "/api/cache", session: s)
    assert_equal [], view["items"]
  end
end
