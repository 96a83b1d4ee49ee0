# frozen_string_literal: true

require "json"

module Stacklab
  # An error the client sees: {"error": {"code", "message", "field"?}} with its status
  # (backends/CONTRACT.md §5). Engine failures name the engine and host, never a connection string.
  class ApiError < StandardError
    attr_reader :status, :code, :field, :headers, :detail

    def initialize(status, code, message, field: nil, headers: {}, detail: nil)
      super(message)
      @status = status
      @code = code
      @field = field
      @headers = headers
      @detail = detail
    end

    def body
      error = { "code" => code, "message" => message }
      error["field"] = field unless field.nil?
      { "error" => error }
    end

    def to_json(*) = JSON.generate(body)

    class << self
      def invalid(field, message) = new(400, "invalid", message, field: field)
      def bad_request(message, field: nil) = new(400, "bad_request", message, field: field)

      def unsupported_media_type
        new(415, "unsupported_media_type", "send the body as JSON with `content-type: application/json`")
      end

      def not_found(what, id) = new(404, "not_found", "no #{what} with id #{id}; check the id")
      def no_route(path) = new(404, "not_found", "nothing at #{path}")
      def method_not_allowed = new(405, "method_not_allowed", "method not allowed")

      def conflict(field, value)
        new(409, "conflict", "#{field} `#{value}` is already taken; choose another", field: field)
      end

      def refused(why) = new(409, "refused", why)

      def session_missing
        new(401, "session_missing", "this request needs the x-stacklab-session header the proxy adds")
      end

      def session_expired
        new(410, "session_expired", "your session has expired; start a new one with POST /api/sessions")
      end

      # A 401 names the scheme it wants (RFC 9110 §11.6.1): the runtime credential is a bearer token.
      def unauthorized
        new(401, "unauthorized", "send the runtime credential as `Authorization: Bearer <token>`",
            headers: { "WWW-Authenticate" => "Bearer" })
      end

      def forbidden = new(403, "forbidden", "the credential is not valid for this instance")
      def too_large(limit) = new(413, "body_too_large", "the body is larger than #{limit} bytes")

      def unavailable(engine, reason)
        new(503, "unavailable",
            "#{engine} is unavailable: #{reason}; retry shortly, and if it stays down re-provision " \
            "the session (POST /api/session/reprovision) or start a new one")
      end

      # A bounded resource (hashing, benchmarks) is taken: answered with Retry-After.
      def busy(message) = new(503, "busy", message, headers: { "Retry-After" => "1" })

      def benchmark_running
        new(409, "benchmark_running", "this session is running a benchmark already; wait for its result")
      end

      # The detail goes to the log, never to the client.
      def internal(detail)
        new(500, "internal", "the backend failed; retry, and report a bug if it persists", detail: detail)
      end
    end
  end

  # A store's failure: a unique index said no (Conflict), or the engine failed.
  class StoreError < StandardError; end

  class Conflict < StoreError
    attr_reader :field

    def initialize(field)
      super("#{field} is already taken")
      @field = field
    end
  end

  # A cache adapter's failure.
  class CacheError < StandardError
    def to_api = ApiError.unavailable("the cache", message)
  end

  class UnknownPolicy < CacheError
    def initialize(engine, policy, choices)
      super("`#{policy}` is not a policy of #{engine}; choose one of: #{choices.join(', ')}")
    end

    def to_api = ApiError.invalid("policy", message)
  end

  class PolicyRefused < CacheError
    def to_api = ApiError.refused(message)
  end
end
