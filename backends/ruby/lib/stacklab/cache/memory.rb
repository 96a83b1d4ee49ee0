# frozen_string_literal: true

module Stacklab
  module Cache
    # The in-process cache: bounded in bytes (key + value), with an eviction policy switchable
    # while it runs — LRU, LFU, FIFO, TTL-first — the semantics of the Rust runtime's
    # cache/memory.rs (CONTRACT.md §13).
    #
    # One per session per instance (so one Puma process per instance, never several workers).
    # A Hash kept in recency order (a touched entry is moved to the end) makes LRU's victim the
    # first entry and the listing the last ones; the other policies pick their victim by a scan,
    # which for the bounded sizes here (1 MiB of entries of a few hundred bytes) costs less than
    # keeping a heap in Ruby. The logical clock ticks once per read or write, so ranks are unique.
    # Expired entries are purged before every operation: never counted, returned or evicted.
    class Memory
      DEFAULT_MAX_BYTES = 1024 * 1024
      POLICIES = %w[lru lfu fifo ttl].freeze
      MEANING = {
        "lru" => "LRU: when full, the entry read or written longest ago is evicted",
        "lfu" => "LFU: when full, the entry read or written the fewest times is evicted " \
                 "(the least recently used among equals)",
        "fifo" => "FIFO: when full, the entry written first is evicted; reads do not count",
        "ttl" => "TTL: when full, the entry closest to expiry is evicted; entries without a TTL go last",
      }.freeze

      Entry = Struct.new(:value, :expires_at, :written, :touched, :uses, :size)

      def self.parse_policy(name)
        p = name.to_s.strip.downcase
        raise UnknownPolicy.new("the in-process cache", name, POLICIES) unless POLICIES.include?(p)

        p
      end

      def self.from_spec(spec)
        new(policy: spec["policy"].to_s, max_bytes: spec["max_bytes"].to_i)
      end

      def initialize(policy: "", max_bytes: 0, clock: -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) })
        @policy = policy.strip.empty? ? "lru" : self.class.parse_policy(policy)
        @max = max_bytes.positive? ? max_bytes : DEFAULT_MAX_BYTES
        @clock = clock
        @lock = Mutex.new
        @entries = {} # oldest touch first
        @bytes = 0
        @tick = 0
        @hits = @misses = @evictions = 0
        @next_expiry = nil
      end

      def engine = "memory"
      def inspect = "#<Cache::Memory policy=#{@policy} entries=#{@entries.size}>"

      def get(key)
        @lock.synchronize do
          purge(@clock.call)
          e = @entries.delete(key)
          if e.nil?
            @misses += 1
            next nil
          end
          @hits += 1
          e.touched = (@tick += 1)
          e.uses += 1
          @entries[key] = e
          e.value
        end
      end

      # ttl_ms: the entry's lifetime (the service always passes one).
      def set(key, value, ttl_ms)
        @lock.synchronize do
          now = @clock.call
          purge(now)
          previous = take(key)
          size = key.bytesize + value.bytesize
          # Larger than the whole cache: not kept (the old value, taken out above, is stale).
          next if size > @max

          while @bytes + size > @max && evict_one
            @evictions += 1
          end
          t = (@tick += 1)
          expires_at = ttl_ms&.positive? ? now + (ttl_ms / 1000.0) : nil
          @next_expiry = expires_at if expires_at && (@next_expiry.nil? || expires_at < @next_expiry)
          @entries[key] = Entry.new(value, expires_at, t, t, previous ? previous.uses + 1 : 1, size)
          @bytes += size
        end
      end

      def delete(key)
        @lock.synchronize do
          purge(@clock.call)
          take(key)
        end
        nil
      end

      def items
        @lock.synchronize do
          now = @clock.call
          purge(now)
          @entries.to_a.last(MAX_LISTED_ITEMS).reverse.map do |key, e|
            ttl = e.expires_at && [((e.expires_at - now) * 1000 + 1e-6).floor, 0].max
            Cache.item(key, ttl, e.size, e.value)
          end
        end
      end

      def stats
        @lock.synchronize do
          purge(@clock.call)
          Cache.stats(hits: @hits, misses: @misses, evictions: @evictions, bytes: @bytes, max_bytes: @max)
        end
      end

      def policy
        p = @lock.synchronize { @policy }
        { "policy" => p, "policies" => POLICIES.dup, "changeable" => true, "note" => MEANING[p] }
      end

      def set_policy(name)
        p = self.class.parse_policy(name)
        @lock.synchronize { @policy = p }
      end

      # Empties entries and bytes; hits, misses and evictions are kept.
      def flush
        @lock.synchronize do
          @entries.clear
          @bytes = 0
        end
      end

      def close = flush

      private

      def take(key)
        e = @entries.delete(key)
        @bytes -= e.size if e
        e
      end

      # Walks the entries only once the earliest deadline has passed (@next_expiry, kept as a
      # lower bound: set lowers it, a purge recomputes it).
      def purge(now)
        return if @next_expiry.nil? || now < @next_expiry

        @next_expiry = nil
        @entries.delete_if do |_k, e|
          next false unless e.expires_at

          if e.expires_at <= now
            @bytes -= e.size
            next true
          end
          @next_expiry = e.expires_at if @next_expiry.nil? || e.expires_at < @next_expiry
          false
        end
      end

      def evict_one
        return false if @entries.empty?

        victim =
          case @policy
          when "lru" then @entries.first[0]
          when "lfu" then @entries.min_by { |_k, e| [e.uses, e.touched] }[0]
          when "fifo" then @entries.min_by { |_k, e| e.written }[0]
          else
            # Entries with a deadline first (earliest, then written first), then the others LRU.
            @entries.min_by { |_k, e| e.expires_at ? [0, e.expires_at, e.written] : [1, 0, e.touched] }[0]
          end
        take(victim)
        true
      end
    end
  end
end
