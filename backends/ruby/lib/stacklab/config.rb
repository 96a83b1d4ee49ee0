# frozen_string_literal: true

require "etc"
require "ipaddr"
require_relative "errors"

module Stacklab
  # The [backend] section of a stacklab config file (CONTRACT.md §2) and the input rules it sets.
  # Every problem is reported with its key, before anything listens.
  class Config
    class Invalid < StandardError
      attr_reader :problems

      def initialize(problems)
        super(problems.map { |k, m| "#{k}: #{m}" }.join("; "))
        @problems = problems
      end
    end

    INT_KEYS = %w[max_sessions session_idle_ms db_connections_per_session descriptor_ttl_ms bcrypt_cost
                  max_body_bytes graphql_max_depth graphql_max_complexity graphql_max_fields
                  graphql_max_hashes max_concurrent_hashes hash_wait_ms max_concurrent_benchmarks].freeze
    STR_KEYS = %w[addr control_url].freeze
    # Keys that must be at least 1 (0 is refused rather than taken as a default).
    POSITIVE = %w[graphql_max_depth graphql_max_complexity graphql_max_fields graphql_max_hashes
                  max_concurrent_hashes max_concurrent_benchmarks].freeze

    DEFAULTS = {
      "addr" => "127.0.0.1:0",
      "control_url" => "http://127.0.0.1:9000",
      "max_sessions" => 256,
      "session_idle_ms" => 300_000,
      "db_connections_per_session" => 4,
      "descriptor_ttl_ms" => 30_000,
      "bcrypt_cost" => 10,
      "max_body_bytes" => 65_536,
      "graphql_max_depth" => 6,
      "graphql_max_complexity" => 200,
      "graphql_max_fields" => 500,
      "graphql_max_hashes" => 10,
      "max_concurrent_hashes" => 2 * Etc.nprocessors,
      "hash_wait_ms" => 1000,
      "max_concurrent_benchmarks" => 2,
    }.freeze

    # Fixed limits (as in the Rust runtime): not configurable.
    MIN_USERNAME = 3
    MAX_USERNAME = 32
    MAX_EMAIL = 254
    MIN_PASSWORD = 8
    MAX_PASSWORD = 72 # bcrypt reads 72 bytes; longer passwords are refused, never cut
    MAX_FULL_NAME = 100
    MAX_PAGE = 100
    MAX_BENCHMARK_OPS = 2000

    attr_reader :values

    def self.load(path)
      return new({}) if path.nil?

      require "toml-rb"
      text = begin
        File.read(path)
      rescue SystemCallError => e
        raise Invalid, [["config", "cannot read #{path}: #{e.message}"]]
      end
      doc = begin
        TomlRB.parse(text)
      rescue StandardError => e
        raise Invalid, [["config", "#{path} is not valid TOML: #{e.message.lines.first&.strip}"]]
      end
      new(doc["backend"] || {})
    end

    def self.parse_addr(text)
      host, sep, port = text.to_s.rpartition(":")
      raise ArgumentError, text if sep.empty? || port !~ /\A\d+\z/ || port.to_i > 65_535

      host = host[1..-2] if host.start_with?("[") && host.end_with?("]")
      IPAddr.new(host)
      [host, port.to_i]
    rescue IPAddr::Error
      raise ArgumentError, text
    end

    def initialize(section)
      raise Invalid, [["backend", "must be a table"]] unless section.is_a?(Hash)

      problems = []
      section.each do |key, value|
        if INT_KEYS.include?(key)
          problems << ["backend.#{key}", "must be a non-negative whole number"] unless value.is_a?(Integer) && value >= 0
        elsif STR_KEYS.include?(key)
          problems << ["backend.#{key}", "must be a string"] unless value.is_a?(String)
        else
          problems << ["backend", "unknown field `#{key}`"]
        end
      end
      raise Invalid, problems if problems.any?

      v = DEFAULTS.merge(section)
      begin
        v["addr"] = self.class.parse_addr(v["addr"])
      rescue ArgumentError
        problems << ["backend.addr", "`#{v['addr']}` is not `host:port`"]
      end
      problems << ["backend.control_url", "must be an http:// URL of control's admin address"] unless v["control_url"].start_with?("http://")
      problems << ["backend.bcrypt_cost", "must be between 4 and 16"] unless (4..16).cover?(v["bcrypt_cost"])
      POSITIVE.each { |k| problems << ["backend.#{k}", "must be at least 1"] if v[k].zero? }
      raise Invalid, problems if problems.any?

      v["max_sessions"] = [v["max_sessions"], 1].max
      v["db_connections_per_session"] = [v["db_connections_per_session"], 1].max
      @values = v.freeze
    end

    def [](key) = @values.fetch(key)
    def addr = @values["addr"]
    def control_url = @values["control_url"]
    def max_body_bytes = @values["max_body_bytes"]
    def bcrypt_cost = @values["bcrypt_cost"]
  end
end
