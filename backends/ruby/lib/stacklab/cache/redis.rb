# frozen_string_literal: true

require "redis"
require "uri"

module Stacklab
  module Cache
    # Redis (redis-rb): the Rust runtime's cache/redis.rs behaviour, CONTRACT.md §13.
    #
    # Keys are key_prefix + key, so sessions sharing a server stay apart; listing and flushing
    # are SCAN MATCH prefix*, never KEYS or FLUSHDB. The policy is the server's own
    # maxmemory-policy: a session with a server of its own may change it; on a shared server the
    # change would apply to everyone, so it is refused. One connection per session (redis-rb's
    # client serializes commands on it), 3 s timeouts.
    class Redis
      POLICIES = %w[noeviction allkeys-lru allkeys-lfu allkeys-random
                    volatile-lru volatile-lfu volatile-random volatile-ttl].freeze
      ITEMS_SCAN_BUDGET = 5000
      SCAN_COUNT = 500
      UNLINK_BATCH = 500
      TIMEOUT = 3.0

      SHARED_REFUSAL = "this Redis server is shared by other sessions: its maxmemory-policy applies to every key " \
                       "on it, so changing it would change eviction for everyone. Start a session with its own " \
                       "Redis to try the policies"
      CONFIG_DENIED = "the Redis user may not run CONFIG (an ACL or a managed service), so the maxmemory-policy " \
                      "in force cannot be read or changed from here"
      MEANING = {
        "noeviction" => "noeviction: when full, writes fail and nothing is evicted",
        "allkeys-lru" => "allkeys-lru: when full, evicts the (approximately) least recently used key",
        "allkeys-lfu" => "allkeys-lfu: when full, evicts the (approximately) least frequently used key",
        "allkeys-random" => "allkeys-random: when full, evicts a random key",
        "volatile-lru" => "volatile-lru: when full, evicts the least recently used key among those with a TTL",
        "volatile-lfu" => "volatile-lfu: when full, evicts the least frequently used key among those with a TTL",
        "volatile-random" => "volatile-random: when full, evicts a random key among those with a TTL",
        "volatile-ttl" => "volatile-ttl: when full, evicts the key with a TTL closest to expiry",
      }.freeze

      def self.parse_policy(name)
        p = name.to_s.strip.downcase
        raise UnknownPolicy.new("Redis", name, POLICIES) unless POLICIES.include?(p)

        p
      end

      def self.escape_glob(prefix) = prefix.gsub(/[*?\[\]\\]/) { |c| "\\#{c}" }

      def initialize(spec)
        @wanted = spec["policy"].to_s.strip.downcase
        self.class.parse_policy(@wanted) unless @wanted.empty?
        url = spec["url"].to_s
        begin
          u = URI.parse(url)
          raise URI::InvalidURIError unless %w[redis rediss].include?(u.scheme) && u.host

          @endpoint = "#{u.host}:#{u.port || 6379}"
        rescue URI::InvalidURIError
          # The parser's message would quote the URL.
          raise CacheError, "the Redis URL is not valid; expected redis://[user:password@]host:port[/db]"
        end
        @r = ::Redis.new(url: url, timeout: TIMEOUT, connect_timeout: TIMEOUT, reconnect_attempts: 1)
        @prefix = spec["key_prefix"].to_s
        @pattern = "#{self.class.escape_glob(@prefix)}*"
        @shared = spec["shared"] ? true : false
        @lock = Mutex.new
        @hits = @misses = 0
        begin
          @r.ping
        rescue ::Redis::BaseError => e
          close
          raise unavailable("connect", e)
        end
        return if @shared

        configure("maxmemory", spec["max_bytes"].to_s) if spec["max_bytes"].to_i.positive?
        configure("maxmemory-policy", @wanted) unless @wanted.empty?
      end

      def engine = "redis"
      def inspect = "#<Cache::Redis #{@endpoint} shared=#{@shared}>"

      def get(key)
        value = call("GET") { @r.get(@prefix + key) }
        @lock.synchronize { value.nil? ? @misses += 1 : @hits += 1 }
        value&.b
      end

      def set(key, value, ttl_ms)
        call("SET") { @r.set(@prefix + key, value, px: [ttl_ms.to_i, 1].max) }
      end

      def delete(key)
        call("DEL") { @r.del(@prefix + key) }
      end

      def items
        keys = {}
        cursor = "0"
        examined = 0
        loop do
          cursor, page = call("SCAN") { @r.scan(cursor, match: @pattern, count: SCAN_COUNT) }
          page.each { |k| keys[k] = true }
          examined += SCAN_COUNT
          break if cursor == "0" || examined >= ITEMS_SCAN_BUDGET
        end
        sorted = keys.keys.sort
        replies = pipelined(sorted.flat_map { |k| [["object", "idletime", k], ["pttl", k]] })
        ranked = []
        sorted.each_with_index do |k, i|
          idle = replies[2 * i]
          pttl = replies[(2 * i) + 1]
          next unless pttl.is_a?(Integer) && pttl != -2 # expired or deleted since the scan

          ranked << [idle.is_a?(Integer) ? idle : 2**63 - 1, pttl, k]
        end
        left = ->(pttl) { pttl.negative? ? 2**63 - 1 : pttl }
        ranked = ranked.sort_by { |idle, pttl, k| [idle, -left.call(pttl), k] }.first(MAX_LISTED_ITEMS)
        replies = pipelined(ranked.flat_map do |_, _, k|
          [["memory", "usage", k], ["strlen", k], ["getrange", k, 0, PREVIEW_BYTES - 1]]
        end)
        ranked.each_with_index.map do |(_, pttl, k), i|
          usage, strlen, value = replies[3 * i, 3]
          size = usage.is_a?(Integer) ? usage : (strlen.is_a?(Integer) ? strlen : 0)
          logical = k.start_with?(@prefix) ? k[@prefix.length..] : k
          Cache.item(logical.dup.force_encoding(Encoding::UTF_8).scrub("\uFFFD"), pttl >= 0 ? pttl : nil, size,
                     value.is_a?(String) ? value.b : "".b)
        end
      end

      def stats
        info = call("INFO") { @r.info }
        max_bytes = begin
          config_get("maxmemory").to_i
        rescue ::Redis::CommandError => e
          raise unavailable("CONFIG GET", e) unless denied?(e)

          0
        end
        hits, misses = @lock.synchronize { [@hits, @misses] }
        Cache.stats(hits: hits, misses: misses, evictions: info["evicted_keys"].to_i,
                    bytes: info["used_memory"].to_i, max_bytes: max_bytes)
      end

      def policy
        policy = begin
          config_get("maxmemory-policy").to_s
        rescue ::Redis::CommandError => e
          raise unavailable("CONFIG GET", e) unless denied?(e)

          # On a shared server the reason that matters is the sharing, not the ACL.
          return { "policy" => @wanted.empty? ? "unknown" : @wanted, "policies" => POLICIES.dup,
                   "changeable" => false, "note" => @shared ? SHARED_REFUSAL : CONFIG_DENIED }
        end
        note = @shared ? SHARED_REFUSAL : MEANING.fetch(policy, "a policy this adapter does not know")
        { "policy" => policy, "policies" => POLICIES.dup, "changeable" => !@shared, "note" => note }
      end

      def set_policy(name)
        p = self.class.parse_policy(name)
        raise PolicyRefused, SHARED_REFUSAL if @shared

        begin
          @r.config(:set, "maxmemory-policy", p)
        rescue ::Redis::CommandError => e
          raise PolicyRefused, CONFIG_DENIED if denied?(e)

          raise unavailable("CONFIG SET", e)
        rescue ::Redis::BaseError => e
          raise unavailable("CONFIG SET", e)
        end
      end

      # Scans to the end (every key of the session must go), unlinking page by page.
      def flush
        if @prefix.empty? && @shared
          raise PolicyRefused, "this session has no key prefix on a shared Redis: a flush would delete other sessions' keys"
        end

        cursor = "0"
        loop do
          cursor, keys = call("SCAN") { @r.scan(cursor, match: @pattern, count: SCAN_COUNT) }
          keys.each_slice(UNLINK_BATCH) { |batch| call("UNLINK") { @r.unlink(*batch) } }
          break if cursor == "0"
        end
      end

      def close
        @r.close
      rescue StandardError
        nil
      end

      private

      def call(what)
        yield
      rescue ::Redis::BaseError => e
        raise unavailable(what, e)
      end

      def unavailable(what, e) = CacheError.new("Redis at #{@endpoint}: #{what} failed: #{e.message}")

      def denied?(e)
        e.message.include?("NOPERM") || e.message.include?("unknown command") || e.message.include?("unknown subcommand")
      end

      def configure(name, value)
        @r.config(:set, name, value)
      rescue ::Redis::CommandError => e
        raise unavailable("CONFIG SET", e) unless denied?(e)

        $stderr.puts "cannot set Redis #{name} at #{@endpoint}: #{e.message}"
      rescue ::Redis::BaseError => e
        raise unavailable("CONFIG SET", e)
      end

      def config_get(name)
        got = @r.config(:get, name)
        got.is_a?(Hash) ? got[name] : nil
      rescue ::Redis::CommandError
        raise
      rescue ::Redis::BaseError => e
        raise unavailable("CONFIG GET", e)
      end

      # Each reply as it came, errors included, so one refused command (MEMORY USAGE under an
      # ACL) does not hide the others' answers.
      def pipelined(commands)
        return [] if commands.empty?

        futures = nil
        call("pipeline") do
          @r.pipelined do |pipe|
            futures = commands.map { |c| pipe.call(*c) }
          end
        end
        futures.map do |f|
          f.value
        rescue ::Redis::CommandError => e
          e
        end
      rescue ::Redis::CommandError
        # redis-rb raises the first error of a pipeline; the replies are still in the futures.
        futures.map do |f|
          f.value
        rescue StandardError => e
          e
        end
      end
    end
  end
end
