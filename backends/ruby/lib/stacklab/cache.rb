# frozen_string_literal: true

require_relative "errors"

module Stacklab
  # Cache adapters behind one interface (CONTRACT.md §13): in-process, Redis, Memcached, none.
  # The service speaks in logical keys (user:42); Redis and Memcached put the session's
  # key_prefix in front. Every adapter answers get/set/delete/items/stats/policy/set_policy/
  # flush/close; hits and misses are counted per open session.
  module Cache
    MAX_LISTED_ITEMS = 20
    PREVIEW_BYTES = 120

    module_function

    def preview(value)
      value.byteslice(0, PREVIEW_BYTES).dup.force_encoding(Encoding::UTF_8).scrub("\uFFFD")
    end

    def item(key, ttl_ms, size, value)
      { "key" => key, "ttl_ms" => ttl_ms, "bytes" => size, "value_preview" => preview(value) }
    end

    def stats(hits: 0, misses: 0, evictions: 0, bytes: 0, max_bytes: 0)
      { "hits" => hits, "misses" => misses, "evictions" => evictions, "bytes" => bytes, "max_bytes" => max_bytes }
    end

    def connect(spec)
      case spec["engine"]
      when "none" then None.new
      when "memory" then Memory.from_spec(spec)
      when "redis"
        require_relative "cache/redis"
        Redis.new(spec)
      else
        require_relative "cache/memcached"
        Memcached.new(spec)
      end
    end

    # cache = "none": every read misses, nothing is kept.
    class None
      def engine = "none"
      def get(_key) = nil
      def set(_key, _value, _ttl_ms) = nil
      def delete(_key) = nil
      def items = []
      def stats = Cache.stats

      def policy
        { "policy" => "none", "policies" => [], "changeable" => false,
          "note" => "no cache: every read goes to the database" }
      end

      def set_policy(_policy) = raise(PolicyRefused, "this session has no cache, so there is no policy to change")
      def flush = nil
      def close = nil
    end
  end
end

require_relative "cache/memory"
