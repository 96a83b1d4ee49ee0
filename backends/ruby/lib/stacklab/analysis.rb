# frozen_string_literal: true

require "securerandom"
require_relative "service"

module Stacklab
  # Analysis (CONTRACT.md §9): how big the session's data is, how its cache is doing, and how
  # fast its stack reads, writes and hashes, measured on demand. The benchmark is bounded, writes
  # rows of its own (bench-…) straight to the store with one precomputed password, and removes
  # them after, also when a step fails.
  module Analysis
    module_function

    def overview(session)
      db = begin
        session.store.stats
      rescue StoreError => e
        raise ApiError.unavailable("the database", e.message)
      end
      cache = begin
        session.cache.stats
      rescue CacheError => e
        raise e.to_api
      end
      lookups = cache["hits"] + cache["misses"]
      { "database" => db,
        "cache" => { "engine" => session.cache.engine, "stats" => cache,
                     "hit_ratio" => lookups.zero? ? nil : cache["hits"].fdiv(lookups) } }
    end

    def figures(lat, wall)
      ms = lat.sort.map { |x| x * 1000 }
      pct = lambda do |p|
        i = [(ms.size * p).ceil - 1, 0].max
        i < ms.size ? ms[i] : 0.0
      end
      step = [ms.size / 500, 1].max
      { "ops" => ms.size, "ops_per_sec" => wall <= 0 ? 0.0 : ms.size / wall,
        "p50_ms" => pct.call(0.50), "p95_ms" => pct.call(0.95), "p99_ms" => pct.call(0.99),
        "samples_ms" => ms.each_slice(step).map(&:first) }
    end

    def benchmark(session, config, guard, reads, writes)
      top = Config::MAX_BENCHMARK_OPS
      raise ApiError.invalid("reads", "reads is between 1 and #{top}") unless (1..top).cover?(reads)
      raise ApiError.invalid("writes", "writes is between 1 and #{top}") unless (1..top).cover?(writes)

      guard.benchmark(session.code) { run(session, config, guard, reads, writes) }
    end

    def timed
      t = Stacklab.monotonic
      yield
      Stacklab.monotonic - t
    end

    def store(&block)
      block.call
    rescue StoreError => e
      raise ApiError.unavailable("the database", e.message)
    end

    def run(session, config, guard, reads, writes)
      tag = SecureRandom.hex(4)
      password = session.hasher.hash("benchmark-password")
      ids = []
      begin
        lat = []
        wall = Stacklab.monotonic
        writes.times do |i|
          name = "bench-#{tag}-#{i}"
          row = { username: name, username_key: name, email: "#{name}@bench.invalid",
                  email_key: "#{name}@bench.invalid", full_name: "", password: password, created_at: 0, updated_at: 0 }
          lat << timed { ids << store { session.store.insert(row) } }
        end
        write_figures = figures(lat, Stacklab.monotonic - wall)

        lat = []
        wall = Stacklab.monotonic
        reads.times { |i| lat << timed { store { session.store.get(ids[i % ids.size]) } } }
        db_figures = figures(lat, Stacklab.monotonic - wall)

        trace = Trace.new
        ids.first(reads).each { |id| quiet { session.get(id, trace) } }
        cycle = [ids.size, reads].min
        lat = []
        wall = Stacklab.monotonic
        reads.times { |i| lat << timed { quiet { session.get(ids[i % cycle], trace) } } }
        cached_figures = figures(lat, Stacklab.monotonic - wall)
      ensure
        trace = Trace.new
        ids.each { |id| quiet { session.delete(id, trace) } }
      end

      hashing = Hasher::MODES.map do |mode|
        h = Hasher.new(mode, config.bcrypt_cost, "benchmark-pepper", guard)
        lat = Array.new(3) { timed { h.hash("correct horse battery") } }
        { "mode" => mode, "ms" => figures(lat, 0)["p50_ms"] }
      end
      { "writes" => write_figures, "db_reads" => db_figures, "cached_reads" => cached_figures,
        "cache_engine" => session.cache.engine, "password_hashing" => hashing }
    end

    def quiet
      yield
    rescue ApiError
      nil
    end
  end
end
