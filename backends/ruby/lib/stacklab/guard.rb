# frozen_string_literal: true

require "concurrent"
require_relative "errors"

module Stacklab
  # Bounds on the work one request can make an instance do (CONTRACT.md §9a): at most
  # max_concurrent_hashes hashes at once, one that cannot start within hash_wait_ms is 503 busy;
  # one benchmark per session (409 benchmark_running) and max_concurrent_benchmarks per instance
  # (503 busy). One Guard per instance; its counters are in GET /healthz.
  class Guard
    attr_reader :max_hashes

    def initialize(max_hashes:, hash_wait_ms:, max_benchmarks:)
      @max_hashes = max_hashes
      @hash_wait = hash_wait_ms / 1000.0
      @max_benchmarks = max_benchmarks
      @permits = Concurrent::Semaphore.new(max_hashes)
      @lock = Mutex.new
      @hashing = 0
      @benchmarking = {}
      @counts = Hash.new(0)
    end

    # Runs the block (a hash or a verification) once a permit is free.
    def hash
      unless @permits.try_acquire(1, @hash_wait)
        count(:hashes_refused)
        raise ApiError.busy("this instance is hashing #{@max_hashes} passwords already and none finished " \
                            "within #{(@hash_wait * 1000).round} ms; retry in a second")
      end
      @lock.synchronize { @counts[:hashes] += 1; @hashing += 1 }
      begin
        yield
      ensure
        @lock.synchronize { @hashing -= 1 }
        @permits.release
      end
    end

    def benchmark(session)
      @lock.synchronize do
        if @benchmarking.key?(session)
          @counts[:benchmarks_refused_session] += 1
          raise ApiError.benchmark_running
        end
        if @benchmarking.size >= @max_benchmarks
          @counts[:benchmarks_refused_busy] += 1
          raise ApiError.busy("this instance runs #{@max_benchmarks} benchmarks already; retry when one has finished")
        end
        @benchmarking[session] = true
        @counts[:benchmarks] += 1
      end
      begin
        yield
      ensure
        @lock.synchronize { @benchmarking.delete(session) }
      end
    end

    def graphql_refused = count(:graphql_refused)

    def snapshot
      @lock.synchronize do
        {
          "hashing" => { "max" => @max_hashes, "running" => @hashing, "started" => @counts[:hashes],
                         "refused" => @counts[:hashes_refused] },
          "benchmarks" => { "max" => @max_benchmarks, "running" => @benchmarking.size,
                            "started" => @counts[:benchmarks],
                            "refused_session" => @counts[:benchmarks_refused_session],
                            "refused_busy" => @counts[:benchmarks_refused_busy] },
          "graphql_hashes_refused" => @counts[:graphql_refused],
        }
      end
    end

    private

    def count(key) = @lock.synchronize { @counts[key] += 1 }
  end
end
