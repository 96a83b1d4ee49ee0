# frozen_string_literal: true

require "dalli"
require "digest"
require "socket"
require "cgi"

module Stacklab
  module Cache
    # Memcached: reads and writes through Dalli, the inspector's view through memcached's own
    # text protocol (lru_crawler metadump, mg, stats), which Dalli does not speak — the Rust
    # runtime's cache/memcached.rs, CONTRACT.md §13.
    #
    # Keys are key_prefix + key; a key memcached would not take is stored as prefix~x{hex}, or
    # prefix~h{sha256} when even that is too long. Values are raw bytes with flags 0 (Dalli's
    # `raw` mode, no compression), so the other runtimes read them. Memcached has one eviction
    # policy, LRU, so a change is refused.
    class Memcached
      MAX_KEY_BYTES = 250
      MAX_PREFIX_BYTES = 150
      ITEMS_DUMP_BUDGET = 10_000
      FLUSH_DUMP_BUDGET = 1_000_000
      TIMEOUT = 3.0
      BUSY_WAIT = 0.1
      BUSY_RETRIES = 30
      DELETE_BATCH = 100
      RELATIVE_EXPIRY_MAX = 30 * 24 * 3600

      ONE_POLICY = "Memcached has one eviction policy, LRU, and it cannot be switched: items are grouped by " \
                   "size into slab classes, each class keeps its own segmented LRU (hot, warm and cold), and " \
                   "when memory runs out the least recently used item of the class being written to is " \
                   "evicted. A key prefix keeps this session's keys apart by name only: on a shared server " \
                   "other sessions' items compete for the same memory and can push this session's items out."

      INVALID = "the Memcached address is not valid; expected host:port or memcache://host:port"

      # host:port, memcache://host:port or memcache://user:pass@host:port/ (credentials dropped).
      def self.parse_addr(url)
        url = url.to_s.strip
        scheme, sep, rest = url.partition("://")
        if sep.empty?
          rest = url
        elsif !%w[memcache memcached memcache+tcp].include?(scheme)
          raise CacheError, INVALID
        end
        host_port = rest.split("/", 2).first.to_s.split("?", 2).first.to_s.rpartition("@").last
        raise CacheError, INVALID if host_port.empty? || host_port.match?(/\s/)

        host, colon, port = host_port.rpartition(":")
        if !colon.empty? && !host.empty? && !host.end_with?(":") && port.match?(/\A\d+\z/) && port.to_i <= 65_535
          return [host.delete("[]"), port.to_i]
        end
        raise CacheError, INVALID if host_port.include?(":") && !host_port.start_with?("[")

        [host_port.delete("[]"), 11_211]
      end

      def self.wire_key(prefix, key)
        room = MAX_KEY_BYTES - prefix.bytesize
        raw = key.b
        if !raw.empty? && raw.bytesize <= room && !key.start_with?("~") && raw.bytes.all? { |b| b.between?(0x21, 0x7E) }
          return prefix + key
        end
        return "#{prefix}~x#{raw.unpack1('H*')}" if 2 + (2 * raw.bytesize) <= room

        "#{prefix}~h#{Digest::SHA256.hexdigest(raw)}"
      end

      def self.logical_key(prefix, wire)
        rest = wire.start_with?(prefix) ? wire[prefix.length..] : wire
        if rest.start_with?("~x")
          decoded = [rest[2..]].pack("H*").force_encoding(Encoding::UTF_8)
          return decoded if rest[2..].match?(/\A(\h\h)*\z/) && decoded.valid_encoding?
        end
        rest
      end

      # Whole seconds rounded up (at least 1); beyond 30 days a Unix time.
      def self.exptime(ttl_ms)
        secs = [(ttl_ms.to_i + 999) / 1000, 1].max
        secs <= RELATIVE_EXPIRY_MAX ? secs : [Time.now.to_i + secs, 2**32 - 1].min
      end

      def initialize(spec)
        @host, @port = self.class.parse_addr(spec["url"])
        @addr = "#{@host}:#{@port}"
        @prefix = spec["key_prefix"].to_s
        if @prefix.bytesize > MAX_PREFIX_BYTES || !@prefix.bytes.all? { |b| b.between?(0x21, 0x7E) }
          raise CacheError, "a Memcached key prefix must be printable ASCII without spaces, at most " \
                            "#{MAX_PREFIX_BYTES} bytes; this session's is not"
        end
        @shared = spec["shared"] ? true : false
        @client = Dalli::Client.new(@host.include?(":") ? "[#{@host}]:#{@port}" : @addr,
                                    socket_timeout: TIMEOUT, socket_max_failures: 1, socket_failure_delay: false,
                                    down_retry_delay: 0, compress: false, serializer: nil, threadsafe: true)
        @lock = Mutex.new
        @hits = @misses = 0
        begin
          raise Dalli::RingError, "no answer" if @client.version.values.compact.empty?
        rescue Dalli::DalliError, SystemCallError => e
          close
          raise unavailable("connect", e)
        end
      end

      def engine = "memcached"
      def inspect = "#<Cache::Memcached #{@addr} shared=#{@shared}>"

      def get(key)
        value = call("get") { @client.get(self.class.wire_key(@prefix, key)) }
        @lock.synchronize { value.nil? ? @misses += 1 : @hits += 1 }
        value&.b
      end

      def set(key, value, ttl_ms)
        call("set") { @client.set(self.class.wire_key(@prefix, key), value, self.class.exptime(ttl_ms), raw: true) }
      end

      def delete(key)
        call("delete") { @client.delete(self.class.wire_key(@prefix, key)) }
      end

      def items
        raw = Raw.new(@host, @port, self)
        found, complete = metadump(raw, ITEMS_DUMP_BUDGET)
        found = found.sort_by { |d| [d[:la], d[:cas]] }.reverse.first(MAX_LISTED_ITEMS)
        return [] if found.empty?

        unless complete
          raw.close
          raw = Raw.new(@host, @port, self)
        end
        raw.send(found.map { |d| "mg #{d[:key]} s t v u\r\n" }.join)
        found.filter_map do |d|
          header = raw.line
          words = header.split(" ")
          next if words[0] == "EN" # gone since the dump
          raise CacheError, "Memcached at #{@addr}: unexpected reply to mg: #{header}" unless words[0] == "VA" && words[1]&.match?(/\A\d+\z/)

          n = words[1].to_i
          ttl = words[2..].find { |w| w.start_with?("t") }&.delete_prefix("t")
          value = raw.exact(n + 2).byteslice(0, n)
          ttl_ms = ttl&.match?(/\A-?\d+\z/) && ttl.to_i >= 0 ? ttl.to_i * 1000 : nil
          Cache.item(self.class.logical_key(@prefix, d[:key]), ttl_ms, d[:size], value)
        end
      rescue SystemCallError, IOError => e
        raise unavailable("lru_crawler metadump", e)
      ensure
        raw&.close
      end

      def stats
        raw = Raw.new(@host, @port, self)
        raw.send("stats\r\n")
        got = {}
        loop do
          line = raw.line
          break if line == "END"

          words = line.split(" ")
          raise CacheError, "Memcached at #{@addr}: unexpected reply to stats: #{line}" unless words.size >= 3 && words[0] == "STAT"

          got[words[1]] = words[2]
        end
        num = ->(k) { got[k].to_s.match?(/\A\d+\z/) ? got[k].to_i : 0 }
        hits, misses = @lock.synchronize { [@hits, @misses] }
        Cache.stats(hits: hits, misses: misses, evictions: num.call("evictions"), bytes: num.call("bytes"),
                    max_bytes: num.call("limit_maxbytes"))
      rescue SystemCallError, IOError => e
        raise unavailable("stats", e)
      ensure
        raw&.close
      end

      def policy
        { "policy" => "lru", "policies" => ["lru"], "changeable" => false, "note" => ONE_POLICY }
      end

      def set_policy(_name) = raise(PolicyRefused, ONE_POLICY)

      # Deletes the session's items a metadump finds; flush_all would empty the whole server.
      def flush
        if @prefix.empty? && @shared
          raise PolicyRefused, "this session has no key prefix on a shared Memcached: a flush would delete other sessions' items"
        end

        raw = Raw.new(@host, @port, self)
        found, complete = metadump(raw, FLUSH_DUMP_BUDGET)
        unless complete
          raw.close
          raw = Raw.new(@host, @port, self)
        end
        found.each_slice(DELETE_BATCH) do |batch|
          raw.send(batch.map { |d| "delete #{d[:key]}\r\n" }.join)
          batch.each do
            line = raw.line
            raise CacheError, "Memcached at #{@addr}: unexpected reply to delete: #{line}" unless %w[DELETED NOT_FOUND].include?(line)
          end
        end
      rescue SystemCallError, IOError => e
        raise unavailable("delete", e)
      ensure
        raw&.close
      end

      def close
        @client.close
      rescue StandardError
        nil
      end

      def unavailable(what, e) = CacheError.new("Memcached at #{@addr}: #{what} failed: #{e.message}")

      private

      def call(what)
        yield
      rescue Dalli::DalliError, SystemCallError, IOError => e
        raise unavailable(what, e)
      end

      def parse_dump_line(line)
        fields = line.split(" ").filter_map { |f| f.split("=", 2) if f.include?("=") }.to_h
        return nil unless fields["key"] && fields["la"]&.match?(/\A\d+\z/)

        { key: CGI.unescape(fields["key"]).force_encoding(Encoding::UTF_8).scrub("\uFFFD"), la: fields["la"].to_i,
          cas: fields["cas"].to_i, size: fields["size"].to_i }
      end

      # The session's items; false when the budget ran out first (the connection is then in the
      # middle of the dump and must be dropped).
      def metadump(raw, budget)
        busy = 0
        loop do
          raw.send("lru_crawler metadump all\r\n")
          found = []
          lines = 0
          retry_dump = false
          loop do
            line = raw.line
            return [found, true] if line == "END"

            if line.start_with?("BUSY") || line.include?("try again")
              busy += 1
              raise CacheError, "Memcached at #{@addr}: the LRU crawler stayed busy: #{line}" if busy > BUSY_RETRIES

              sleep BUSY_WAIT
              retry_dump = true
              break
            end
            raise CacheError, "Memcached at #{@addr}: lru_crawler metadump refused: #{line}" if line.start_with?("ERROR") || line.include?("_ERROR")

            d = parse_dump_line(line)
            found << d if d && d[:key].start_with?(@prefix)
            lines += 1
            return [found, false] if lines >= budget
          end
          next if retry_dump
        end
      end

      # A text-protocol connection; every exchange has TIMEOUT.
      class Raw
        MAX_LINE = 4096

        def initialize(host, port, owner)
          @sock = Socket.tcp(host, port, connect_timeout: TIMEOUT)
          @buf = +"".b
        rescue SystemCallError, SocketError => e
          raise owner.unavailable("connect", e)
        end

        def send(data) = @sock.write(data)

        def line
          until (i = @buf.index("\n"))
            raise IOError, "line too long" if @buf.bytesize > MAX_LINE

            fill
          end
          l = @buf.slice!(0, i + 1)
          l.chomp.force_encoding(Encoding::UTF_8).scrub("\uFFFD")
        end

        def exact(n)
          fill while @buf.bytesize < n
          @buf.slice!(0, n)
        end

        def close
          @sock.close
        rescue StandardError
          nil
        end

        private

        def fill
          raise IOError, "timed out" unless @sock.wait_readable(TIMEOUT)

          chunk = @sock.read_nonblock(65_536, exception: false)
          raise IOError, "connection closed" if chunk.nil?
          return if chunk == :wait_readable

          @buf << chunk
        end
      end
    end
  end
end
