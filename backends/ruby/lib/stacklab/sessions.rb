# frozen_string_literal: true

require "json"
require "net/http"
require "uri"
require_relative "errors"
require_relative "service"

module Stacklab
  # Descriptors from control (CONTRACT.md §3): GET {base}/admin/stacks/{code} with the runtime
  # credential as a bearer token. Never through a proxy from the environment: control is on the
  # loopback, and the credential must not travel anywhere else.
  class Control
    TIMEOUT = 5

    def initialize(base, credential, logger)
      @base = URI(base.chomp("/"))
      @credential = credential
      @log = logger
    end

    def inspect = "#<Control #{@base}>"

    # The session's descriptor, or nil when control does not know the session.
    def fetch(code)
      res = request(Net::HTTP::Get.new(path("/admin/stacks/#{code}")))
      return nil if %w[404 410].include?(res.code)
      raise ApiError.unavailable("control", "control answered #{res.code}") unless res.code == "200"

      d = JSON.parse(res.body.to_s)
      check(d)
      d
    rescue JSON::ParserError, TypeError, KeyError => e
      raise ApiError.unavailable("control", "bad stack descriptor: #{e.message[0, 100]}")
    rescue SystemCallError, IOError, Timeout::Error, SocketError => e
      raise ApiError.unavailable("control", "cannot reach control at #{@base.host}:#{@base.port}: #{e.message}")
    end

    # Best effort: the session keeps its policy on another instance and after a restart.
    def cache_policy_changed(code, policy)
      req = Net::HTTP::Put.new(path("/admin/stacks/#{code}/cache-policy"))
      req["content-type"] = "application/json"
      req.body = JSON.generate({ "policy" => policy })
      res = request(req)
      @log.warn("control did not record the cache policy change: status #{res.code}") unless res.code.start_with?("2")
    rescue StandardError => e
      @log.warn("cannot tell control about the cache policy change: #{e.message}")
    end

    private

    def path(p) = "#{@base.path}#{p}"

    def request(req)
      req["authorization"] = "Bearer #{@credential}"
      Net::HTTP.start(@base.host, @base.port, nil, nil, nil, nil, open_timeout: TIMEOUT, read_timeout: TIMEOUT,
                                                                write_timeout: TIMEOUT) { |http| http.request(req) }
    end

    def check(d)
      raise TypeError, "not an object" unless d.is_a?(Hash)
      raise TypeError, "session is not a string" unless d.fetch("session").is_a?(String)

      db = d.fetch("database")
      cache = d.fetch("cache")
      raise TypeError, "database.engine or database.url" unless db.is_a?(Hash) && %w[sqlite postgres mysql mongodb].include?(db["engine"]) && db["url"].is_a?(String)
      raise TypeError, "cache.engine" unless cache.is_a?(Hash) && %w[memory redis memcached none].include?(cache["engine"])
    end
  end

  # The sessions this instance serves and their open connections (CONTRACT.md §3, §14).
  #
  # Each request names its session; the instance resolves its descriptor from control, opens its
  # store and cache once and keeps them while it is used. The set is bounded (max_sessions, the
  # least recently used closed first), idle sessions are closed by a sweep, and a descriptor is
  # fetched again after descriptor_ttl, so a session control ended stops being served.
  # Opening is serialized per session: a burst of first requests opens it once.
  class Sessions
    Open = Struct.new(:session, :fetched)

    def initialize(source, config, guard, logger, clock: -> { Stacklab.monotonic })
      @source = source
      @config = config
      @guard = guard
      @log = logger
      @clock = clock
      @lock = Mutex.new
      @open = {}
      @opening = {}
    end

    def size = @lock.synchronize { @open.size }
    def inspect = "#<Sessions open=#{size}>"
    def ttl_s = @config["descriptor_ttl_ms"] / 1000.0
    def idle_s = @config["session_idle_ms"] / 1000.0

    def get(code)
      s = fresh(code)
      return s if s

      gate = @lock.synchronize { @opening[code] ||= Mutex.new }
      gate.synchronize do
        fresh(code) || refresh(code)
      end
    rescue StandardError
      @lock.synchronize { @opening.delete(code) unless @open.key?(code) }
      raise
    end

    def cache_policy_changed(code, policy) = @source.cache_policy_changed(code, policy)

    # Closes a session's connections (it ended, or its stack changed).
    def close(code, keep_gate: false)
      o = @lock.synchronize do
        @opening.delete(code) unless keep_gate
        @open.delete(code)
      end
      o&.session&.close
    end

    # Closes sessions idle longer than session_idle_ms.
    def sweep
      now = Stacklab.monotonic
      stale = @lock.synchronize { @open.select { |_, o| now - o.session.last_used > idle_s }.keys }
      stale.each do |code|
        @log.info("session #{Stacklab.log_id(code)} closed: idle")
        close(code)
      end
    end

    def close_all = @lock.synchronize { @open.keys }.each { |c| close(c) }

    private

    def fresh(code)
      @lock.synchronize do
        o = @open[code]
        if o && @clock.call - o.fetched < ttl_s
          o.session.touch
          o.session
        end
      end
    end

    def refresh(code)
      descriptor = @source.fetch(code)
      if descriptor.nil?
        close(code)
        raise ApiError.session_expired
      end
      kept = @lock.synchronize do
        o = @open[code]
        if o && same_stack?(o.session.descriptor, descriptor)
          o.fetched = @clock.call
          o.session.touch
          o.session
        end
      end
      return kept if kept

      close(code, keep_gate: true)
      session = Session.open(descriptor, @config, @guard, @log)
      evicted = nil
      @lock.synchronize do
        if @open.size >= @config["max_sessions"]
          victim = @open.min_by { |_, o| o.session.last_used }[0]
          evicted = @open.delete(victim).session
          @opening.delete(victim)
        end
        @open[code] = Open.new(session, @clock.call)
      end
      if evicted
        @log.info("session #{Stacklab.log_id(evicted.code)} closed: more than #{@config['max_sessions']} sessions open")
        evicted.close
      end
      session
    end

    # The same stack, but for a cache policy changed through this API.
    def same_stack?(a, b)
      strip = ->(d) { d.merge("cache" => (d["cache"] || {}).reject { |k, _| k == "policy" }) }
      strip.call(a) == strip.call(b)
    end
  end
end
