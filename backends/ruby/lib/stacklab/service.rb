# frozen_string_literal: true

require "digest"
require "json"
require_relative "errors"
require_relative "rules"
require_relative "crypto"
require_relative "passwords"
require_relative "store"
require_relative "cache"

module Stacklab
  # Time per engine during one request and its cache outcome, which the edge middleware turns
  # into Server-Timing and x-stacklab-cache.
  class Trace
    attr_accessor :cache_s, :db_s
    attr_reader :outcome

    def initialize
      @cache_s = 0.0
      @db_s = 0.0
      @outcome = nil
    end

    # A miss anywhere makes the request a miss; an earlier bypass stays; else the latest.
    def record(outcome)
      @outcome = if @outcome == "miss" || outcome == "miss" then "miss"
                 elsif @outcome == "bypass" then "bypass"
                 else outcome
                 end
    end
  end

  def self.now_ms = Process.clock_gettime(Process::CLOCK_REALTIME, :millisecond)
  def self.monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  # How a session is named in logs: never the code itself (it is the session's cookie).
  def self.log_id(code) = Digest::SHA256.hexdigest(code)[0, 8]

  # One session's stack, open: its store, its cache, its secrets — and the users service, the one
  # place that decides what REST and GraphQL do, so they cannot drift.
  #
  # Reads go to the cache first, then the database, and fill the cache; writes follow the write
  # policy (cache-aside drops the entry, write-through replaces it). The cache holds a user in its
  # stored form (hashes, ciphertext), byte for byte the JSON of the other runtimes (§13).
  class Session
    DEFAULT_TTL_MS = 300_000

    attr_reader :descriptor, :code, :store, :cache, :hasher, :last_used

    def self.open(descriptor, config, guard, logger)
      db = descriptor["database"]
      engine = db["engine"]
      if engine == "mongodb"
        raise ApiError.unavailable("mongodb", "the Ruby runtime has no MongoDB adapter: Debian's Ruby driver " \
                                              "(mongo 2.5) cannot sign in to this server")
      end
      store = begin
        Store.new(engine, db["url"].to_s, config["db_connections_per_session"])
      rescue StoreError => e
        raise ApiError.unavailable(engine, e.message)
      end
      begin
        cache = Cache.connect(descriptor["cache"])
        new(descriptor, store, cache, config, guard, logger)
      rescue CacheError => e
        store.close
        cache&.close
        raise e.to_api
      rescue StandardError
        store.close
        cache&.close
        raise
      end
    end

    def initialize(descriptor, store, cache, config, guard, logger)
      @descriptor = descriptor
      @code = descriptor["session"]
      @store = store
      @cache = cache
      @log = logger
      @write_through = descriptor["write_policy"] == "write-through"
      @crypto = descriptor["encryption"] == "aes-256-gcm" ? FieldCrypto.new(descriptor["encryption_key"].to_s) : nil
      @hasher = Hasher.new(descriptor["password_storage"].to_s.then { |m| m.empty? ? "argon2id" : m },
                           config.bcrypt_cost, descriptor["pepper"].to_s, guard)
      ttl = descriptor.dig("cache", "ttl_ms").to_i
      @ttl_ms = ttl.positive? ? ttl : DEFAULT_TTL_MS
      touch
    end

    def inspect = "#<Session #{Stacklab.log_id(@code)} #{@store.inspect} #{@cache.inspect}>"
    def touch = @last_used = Stacklab.monotonic

    def close
      [@store, @cache].each do |part|
        part.close
      rescue StandardError => e
        @log.warn("closing #{part.class} of session #{Stacklab.log_id(@code)} failed: #{e.message}")
      end
    end

    def to_user(s)
      email, full_name = if @crypto
                           [@crypto.open(s.email), s.full_name.empty? ? "" : @crypto.open(s.full_name)]
                         else
                           [s.email, s.full_name]
                         end
      { "id" => s.id, "username" => s.username, "email" => email, "full_name" => full_name,
        "stored_password" => s.password, "stored_email" => s.email,
        "created_at" => s.created_at, "updated_at" => s.updated_at }
    end

    def create(username, email, password, full_name, trace)
      username = Rules.username(username)
      email = Rules.email(email)
      Rules.password(password)
      full_name = Rules.full_name(full_name || "")
      now = Stacklab.now_ms
      row = { username: username, username_key: username.downcase, email: seal(email),
              email_key: email_key(email.downcase), full_name: full_name.empty? ? "" : seal(full_name),
              password: @hasher.hash(password), created_at: now, updated_at: now }
      id = begin
        db(trace) { @store.insert(row) }
      rescue Conflict => e
        raise ApiError.conflict(e.field, e.field == "email" ? email : username)
      end
      stored = Store::Row.new(id: id, username: row[:username], email: row[:email], full_name: row[:full_name],
                              password: row[:password], created_at: now, updated_at: now)
      cache_put(stored, trace) if @write_through
      trace.record("bypass")
      to_user(stored)
    end

    def load(id, trace)
      t = Stacklab.monotonic
      cached = begin
        @cache.get(key(id))
      rescue CacheError => e
        @log.warn("session #{Stacklab.log_id(@code)}: cache read failed: #{e.message}")
        nil
      end
      trace.cache_s += Stacklab.monotonic - t
      if cached && (u = from_cache(cached))
        trace.record("hit")
        return u
      end
      trace.record(@cache.is_a?(Cache::None) ? "bypass" : "miss")
      stored = db(trace) { @store.get(id) } or raise ApiError.not_found("user", id)
      cache_put(stored, trace)
      stored
    end

    def get(id, trace) = to_user(load(id, trace))

    def list(q, limit, offset, trace)
      limit = 20 if limit.nil?
      offset = 0 if offset.nil?
      raise ApiError.invalid("limit", "limit must be between 1 and #{Config::MAX_PAGE}") unless (1..Config::MAX_PAGE).cover?(limit)
      raise ApiError.invalid("offset", "offset cannot be negative") if offset.negative?

      q = Rules.trim(q.to_s)
      lower = index = nil
      unless q.empty?
        raise ApiError.invalid("q", "search text is at most #{Config::MAX_EMAIL} characters") if q.length > Config::MAX_EMAIL
        raise ApiError.invalid("q", "search text cannot contain the NUL character") if q.include?("\0")

        lower = q.downcase
        index = @crypto&.index(lower)
      end
      rows, total = db(trace) { @store.search(lower, index, limit, offset) }
      trace.record("bypass")
      { "items" => rows.map { |r| to_user(r) }, "total" => total, "limit" => limit, "offset" => offset }
    end

    def update(id, fields, trace)
      changes = {}
      username = email = ""
      unless fields["username"].nil?
        username = Rules.username(fields["username"])
        changes["username"] = username
        changes["username_key"] = username.downcase
      end
      unless fields["email"].nil?
        email = Rules.email(fields["email"])
        changes["email"] = seal(email)
        changes["email_key"] = email_key(email.downcase)
      end
      unless fields["full_name"].nil?
        f = Rules.full_name(fields["full_name"])
        changes["full_name"] = f.empty? ? "" : seal(f)
      end
      unless fields["password"].nil?
        Rules.password(fields["password"])
        changes["password"] = @hasher.hash(fields["password"])
      end
      changes["updated_at"] = Stacklab.now_ms
      stored = begin
        db(trace) { @store.update(id, changes) }
      rescue Conflict => e
        raise ApiError.conflict(e.field, e.field == "email" ? email : username)
      end
      raise ApiError.not_found("user", id) if stored.nil?

      @write_through ? cache_put(stored, trace) : cache_drop(stored.id, trace)
      trace.record("bypass")
      to_user(stored)
    end

    def delete(id, trace)
      gone = db(trace) { @store.delete(id) }
      cache_drop(id, trace)
      trace.record("bypass")
      raise ApiError.not_found("user", id) unless gone
    end

    def verify_password(id, password, trace)
      return false if password.bytesize > Config::MAX_PASSWORD

      @hasher.verify(password, load(id, trace).password)
    end

    # The logical key of a user's cache entry.
    def key(id) = "user:#{id}"

    # Compact JSON of the stored form, in serde's field order (CONTRACT.md §13).
    def self.cached_json(u)
      JSON.generate({ "id" => u.id, "username" => u.username, "email" => u.email, "full_name" => u.full_name,
                      "password" => u.password, "created_at" => u.created_at, "updated_at" => u.updated_at })
    end

    def db(trace)
      t = Stacklab.monotonic
      yield
    rescue Conflict
      raise
    rescue StoreError => e
      raise ApiError.unavailable("the database", e.message)
    ensure
      trace.db_s += Stacklab.monotonic - t
    end

    private

    def seal(v) = @crypto ? @crypto.seal(v) : v
    def email_key(lower) = @crypto ? @crypto.index(lower) : lower

    def from_cache(raw)
      d = JSON.parse(raw.dup.force_encoding(Encoding::UTF_8))
      return nil unless d.is_a?(Hash)
      return nil unless %w[id created_at updated_at].all? { |k| d[k].is_a?(Integer) }
      return nil unless %w[username email full_name password].all? { |k| d[k].is_a?(String) }

      Store::Row.new(id: d["id"], username: d["username"], email: d["email"], full_name: d["full_name"],
                     password: d["password"], created_at: d["created_at"], updated_at: d["updated_at"])
    rescue JSON::ParserError, EncodingError
      nil
    end

    # A cache that fails is a slower request, not a failed one.
    def cache_put(u, trace)
      t = Stacklab.monotonic
      @cache.set(key(u.id), self.class.cached_json(u), @ttl_ms)
    rescue CacheError => e
      @log.warn("session #{Stacklab.log_id(@code)}: cache write failed: #{e.message}")
    ensure
      trace.cache_s += Stacklab.monotonic - t
    end

    def cache_drop(id, trace)
      t = Stacklab.monotonic
      @cache.delete(key(id))
    rescue CacheError => e
      @log.warn("session #{Stacklab.log_id(@code)}: cache delete failed: #{e.message}")
    ensure
      trace.cache_s += Stacklab.monotonic - t
    end
  end
end
