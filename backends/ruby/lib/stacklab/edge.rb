# frozen_string_literal: true

require_relative "errors"
require_relative "service"

module Stacklab
  # The outermost middleware: what every response carries and the routing rules that are the
  # contract's rather than Rails' (CONTRACT.md §4).
  #
  # - Server-Timing (backend, cache, db) on every response, errors and /healthz included, and
  #   x-stacklab-cache when the request read or wrote users (the Trace in env).
  # - The path is split on "/" after trimming leading and trailing slashes; Rails' router would
  #   also merge doubled slashes inside (`/api//users`), which the contract keeps apart, so such a
  #   path is sent to a route that matches nothing (answered 404 after the session check, as every
  #   unknown path under /api is).
  # - Anything that escapes the app is the contract's JSON 500, never a Rack or Puma page.
  class Edge
    NO_ROUTE = "/api/__no_route__"

    def initialize(app, logger)
      @app = app
      @log = logger
    end

    def call(env)
      started = Stacklab.monotonic
      trace = env["stacklab.trace"] = Trace.new
      path = env["PATH_INFO"].to_s
      env["stacklab.path"] = path
      segments = path.gsub(%r{\A/+|/+\z}, "").split("/", -1)
      env["PATH_INFO"] = if segments.include?("") && segments.size > 1
                           segments.first == "api" ? NO_ROUTE : "/__no_route__"
                         else
                           "/#{segments.join('/')}"
                         end
      # Rails never parses the query or the body: the controllers read the query as the contract
      # says (the first of a name wins, lossy UTF-8) and bodies through Stacklab::Body. Rails'
      # parsers would refuse malformed escapes or form bodies with exceptions raised outside any
      # controller's rescue.
      env["action_dispatch.request.query_parameters"] = {}
      env["action_dispatch.request.request_parameters"] = {}
      status, headers, body = begin
        @app.call(env)
      rescue StandardError => e
        @log.error("request #{env['HTTP_X_REQUEST_ID'] || '-'} failed outside the app: #{e.class}: #{e.message}")
        err = ApiError.internal(e.class.name)
        [500, { "content-type" => "application/json" }, [err.to_json]]
      end
      status, headers, body = json_only(status, headers, body)
      backend = (Stacklab.monotonic - started) * 1000
      headers["Server-Timing"] = format("backend;dur=%.3f, cache;dur=%.3f, db;dur=%.3f",
                                        backend, trace.cache_s * 1000, trace.db_s * 1000)
      headers["x-stacklab-cache"] = trace.outcome if trace.outcome
      [status, headers, body]
    end
  end

  # The last line of defence: an error answer that is not JSON (Rails' failsafe page, should the
  # exceptions app itself fail) is replaced by the contract's error body.
  class Edge
    private

    def json_only(status, headers, body)
      return [status, headers, body] if status < 400 || headers["Content-Type"].to_s.start_with?("application/json") ||
                                        headers["content-type"].to_s.start_with?("application/json")

      body.close if body.respond_to?(:close)
      err = status >= 500 ? ApiError.internal("a non-JSON #{status}") : ApiError.bad_request("the request could not be read; send it again")
      @log.error("replaced a non-JSON #{status} answer with the JSON error body")
      [err.status, { "Content-Type" => "application/json" }, [err.to_json]]
    end
  end

  # Counts requests in flight, so a stop can let them finish.
  class InFlight
    def initialize(app)
      @app = app
      @n = 0
      @lock = Mutex.new
      @idle = ConditionVariable.new
    end

    def call(env)
      @lock.synchronize { @n += 1 }
      begin
        @app.call(env)
      ensure
        @lock.synchronize do
          @n -= 1
          @idle.broadcast if @n.zero?
        end
      end
    end

    def wait_idle(timeout)
      deadline = Stacklab.monotonic + timeout
      @lock.synchronize do
        while @n.positive?
          left = deadline - Stacklab.monotonic
          return false if left <= 0

          @idle.wait(@lock, left)
        end
      end
      true
    end
  end
end
