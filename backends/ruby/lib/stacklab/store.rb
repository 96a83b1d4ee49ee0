# frozen_string_literal: true

require "active_record"
require "cgi"
require "uri"
require_relative "errors"

module Stacklab
  # A session's own database, through Active Record (CONTRACT.md §10).
  #
  # Rails' multiple-database support switches among databases declared at boot
  # (`connects_to`, `connected_to(role:, shard:)`); here every session brings a database of its
  # own at run time. So each open session gets its own abstract Active Record class with its own
  # connection pool (`establish_connection`), and a `User` model under it: a request of the
  # session can only reach that session's pool, because the model it is handed is bound to it —
  # there is no global "current database" to switch, and so none to leave switched wrongly
  # between requests or threads.
  #
  # Each pool holds at most `db_connections_per_session` connections; a caller waits at most
  # CHECKOUT_TIMEOUT for one (then the database is unavailable); idle connections are closed after
  # IDLE_TIMEOUT by Active Record's reaper. Every call checks a connection out and back in
  # (`with_connection`), so no connection stays leased to a Puma thread between requests.
  #
  # The DDL is CONTRACT.md §10 verbatim, so a table another runtime made is this table; the
  # columns created_at/updated_at hold Unix milliseconds, so Active Record's own timestamps are off.
  class Store
    CHECKOUT_TIMEOUT = 5
    IDLE_TIMEOUT = 60
    CONNECT_TIMEOUT = 5

    DDL = {
      "sqlite" => <<~SQL,
        CREATE TABLE IF NOT EXISTS users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            username TEXT NOT NULL, username_key TEXT NOT NULL,
            email TEXT NOT NULL, email_key TEXT NOT NULL,
            full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,
            created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
            CONSTRAINT users_username_key UNIQUE (username_key),
            CONSTRAINT users_email_key UNIQUE (email_key))
      SQL
      "postgres" => <<~SQL,
        CREATE TABLE IF NOT EXISTS users (
            id BIGSERIAL PRIMARY KEY,
            username TEXT NOT NULL, username_key TEXT NOT NULL,
            email TEXT NOT NULL, email_key TEXT NOT NULL,
            full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,
            created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
            CONSTRAINT users_username_key UNIQUE (username_key),
            CONSTRAINT users_email_key UNIQUE (email_key))
      SQL
      "mysql" => <<~SQL,
        CREATE TABLE IF NOT EXISTS users (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            username VARCHAR(64) NOT NULL, username_key VARCHAR(64) NOT NULL,
            email VARCHAR(1024) NOT NULL, email_key VARCHAR(255) NOT NULL,
            full_name VARCHAR(1024) NOT NULL DEFAULT '', password VARCHAR(1024) NOT NULL,
            created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
            CONSTRAINT users_username_key UNIQUE (username_key),
            CONSTRAINT users_email_key UNIQUE (email_key))
         CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
      SQL
    }.freeze

    SIZE_SQL = {
      "sqlite" => "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
      "postgres" => "SELECT pg_total_relation_size('users')",
      "mysql" => "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) " \
                 "FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'users'",
    }.freeze

    NAMES = { "sqlite" => "SQLite", "postgres" => "PostgreSQL", "mysql" => "MySQL" }.freeze
    COLUMNS = %w[id username email full_name password created_at updated_at].freeze

    # A row as the database holds it.
    Row = Struct.new(:id, :username, :email, :full_name, :password, :created_at, :updated_at, keyword_init: true)

    # Every session's pool is owned by one of these; the name is what Active Record keys pools by.
    class SessionRecord < ActiveRecord::Base
      self.abstract_class = true
    end

    @serial = 0
    @serial_lock = Mutex.new
    def self.next_name
      @serial_lock.synchronize { "stacklab_session_#{@serial += 1}" }
    end

    attr_reader :engine

    def initialize(engine, url, max_connections)
      @engine = engine
      @name = NAMES.fetch(engine)
      config = self.class.connection_config(engine, url).merge(
        pool: max_connections, checkout_timeout: CHECKOUT_TIMEOUT, idle_timeout: IDLE_TIMEOUT,
        reaping_frequency: 15
      )
      owner = self.class.next_name
      @base = Class.new(SessionRecord) do
        self.abstract_class = true
        define_singleton_method(:name) { owner }
      end
      @base.establish_connection(config)
      @users = Class.new(@base) do
        self.table_name = "users"
        self.record_timestamps = false
        define_singleton_method(:name) { "#{owner}_user" }
      end
      begin
        create_schema
      rescue StoreError => e
        close
        raise StoreError, "cannot connect to #{@name}: #{e.message}"
      end
    end

    def inspect = "#<Store #{@engine}>"

    def self.connection_config(engine, url)
      case engine
      when "sqlite" then sqlite_config(url)
      when "postgres"
        u = parse_url(url, %w[postgres postgresql], "PostgreSQL")
        { adapter: "postgresql", host: u.host, port: u.port || 5432, username: unescape(u.user),
          password: unescape(u.password), database: unescape(u.path.to_s.delete_prefix("/")).then { |d| d.empty? ? nil : d },
          connect_timeout: CONNECT_TIMEOUT, prepared_statements: true }.merge(query_options(u))
      when "mysql"
        u = parse_url(url, %w[mysql mariadb], "MySQL")
        { adapter: "mysql2", host: u.host, port: u.port || 3306, username: unescape(u.user),
          password: unescape(u.password), database: unescape(u.path.to_s.delete_prefix("/")).then { |d| d.empty? ? nil : d },
          encoding: "utf8mb4", collation: "utf8mb4_unicode_ci", connect_timeout: CONNECT_TIMEOUT,
          read_timeout: 30, write_timeout: 30 }
      end
    end

    def self.sqlite_config(url)
      rest = url.sub(/\Asqlite:(\/\/)?/, "")
      path, _, query = rest.partition("?")
      mode = URI.decode_www_form(query).to_h.fetch("mode", "rw")
      unless %w[ro rw rwc memory].include?(mode)
        raise StoreError, "cannot connect to SQLite: the URL's mode is not ro, rw, rwc or memory"
      end
      path = CGI.unescape(path)
      if mode != "rwc" && mode != "memory" && !File.exist?(path)
        raise StoreError, "cannot connect to SQLite: the database file does not exist"
      end
      { adapter: "sqlite3", database: path, timeout: 5000 }
    end

    def self.parse_url(url, schemes, name)
      u = URI.parse(url)
      raise URI::InvalidURIError unless schemes.include?(u.scheme) && u.host

      u
    rescue URI::InvalidURIError
      # The parser's message would quote the URL, which holds a password.
      raise StoreError, "cannot connect to #{name}: the connection string is not valid"
    end

    def self.query_options(u)
      opts = URI.decode_www_form(u.query.to_s).to_h
      opts.key?("sslmode") ? { sslmode: opts["sslmode"] } : {}
    end

    def self.unescape(v) = v.nil? ? nil : CGI.unescape(v)

    # --- the store ---------------------------------------------------------------------------

    def insert(user)
      run("insert") { @users.create!(user).id }
    end

    def get(id)
      run("read") { row(@users.where(id: id).pick(*COLUMNS)) }
    end

    # search: nil (everything), or [lower, email_index_or_nil].
    def search(lower, email_index, limit, offset)
      run("search") do
        scope = @users.all
        if lower
          pattern = like_pattern(lower)
          scope = if email_index
                    scope.where("username_key LIKE ? ESCAPE '!' OR email_key = ?", pattern, email_index)
                  else
                    scope.where("username_key LIKE ? ESCAPE '!' OR email_key LIKE ? ESCAPE '!'", pattern, pattern)
                  end
        end
        rows = scope.order(:id).limit(limit).offset(offset).pluck(*COLUMNS).map { |r| row(r) }
        [rows, scope.count]
      end
    end

    # changes: the columns to set (already in stored form) and updated_at.
    def update(id, changes)
      run("update") do
        changed = @users.where(id: id).update_all(changes)
        # MySQL counts only rows it changed; tell "missing" from "unchanged" by reading.
        next nil if changed.zero? && @engine != "mysql"

        row(@users.where(id: id).pick(*COLUMNS))
      end
    end

    def delete(id)
      run("delete") { @users.where(id: id).delete_all.positive? }
    end

    def stats
      run("read its size") do
        @base.connection_pool.with_connection do |c|
          { "engine" => @engine, "size_bytes" => c.select_value(SIZE_SQL[@engine]).to_i,
            "rows" => @users.count }
        end
      end
    end

    def close
      @base.remove_connection
    rescue StandardError
      nil
    end

    private

    def create_schema
      # Two instances opening a new session's database at once both run this, and PostgreSQL's
      # CREATE TABLE IF NOT EXISTS is not safe against a concurrent one: tried again, the table
      # then exists.
      attempt = 0
      begin
        run("set up the schema") { @base.connection_pool.with_connection { |c| c.execute(DDL[@engine]) } }
      rescue StoreError
        raise if (attempt += 1) > 3

        sleep(0.02 * attempt)
        retry
      end
    end

    def row(values)
      return nil if values.nil?

      Row.new(**COLUMNS.zip(values).to_h.transform_keys(&:to_sym)).tap do |r|
        r.id = r.id.to_i
        r.created_at = r.created_at.to_i
        r.updated_at = r.updated_at.to_i
      end
    end

    def like_pattern(text) = "%#{text.gsub(/[%_!]/) { |c| "!#{c}" }}%"

    # One call on a pooled connection; every driver error becomes a StoreError (a unique
    # violation a Conflict naming its field).
    def run(what)
      @base.connection_pool.with_connection { yield }
    rescue ActiveRecord::RecordNotUnique => e
      raise Conflict, conflict_field(e)
    rescue ActiveRecord::ConnectionTimeoutError => e
      raise StoreError, "#{@name} could not #{what}: no connection free within #{CHECKOUT_TIMEOUT} s"
    rescue ActiveRecord::ActiveRecordError, SystemCallError, IOError => e
      raise StoreError, "#{@name} could not #{what}: #{describe(e)}"
    rescue StandardError => e
      raise unless driver_error?(e)

      raise StoreError, "#{@name} could not #{what}: #{describe(e)}"
    end

    def driver_error?(e)
      (defined?(PG::Error) && e.is_a?(PG::Error)) ||
        (defined?(Mysql2::Error) && e.is_a?(Mysql2::Error)) ||
        (defined?(SQLite3::Exception) && e.is_a?(SQLite3::Exception))
    end

    # The field whose unique index refused, decided by the index's name alone (the message of
    # MySQL quotes the duplicate value, which may contain the word "email").
    def conflict_field(e)
      cause = e.cause
      name =
        if defined?(PG::Error) && cause.is_a?(PG::Error) && cause.result
          cause.result.error_field(PG::Result::PG_DIAG_CONSTRAINT_NAME).to_s
        elsif defined?(Mysql2::Error) && cause.is_a?(Mysql2::Error)
          cause.message[/for key '([^']*)'/, 1].to_s
        else
          cause&.message.to_s[/UNIQUE constraint failed: (.*)\z/, 1].to_s # "users.email_key"
        end
      name.include?("email_key") ? "email" : "username"
    end

    # A driver error as one line. Drivers do not put passwords in their messages; a connection
    # string never reaches one.
    def describe(e)
      text = (e.cause || e).message.to_s.split.join(" ")
      text = e.class.name if text.empty?
      text.gsub(%r{\w+://\S*@}, "<url>@")[0, 300]
    end
  end
end

# Each SQLite connection runs the contract's PRAGMAs, and waits for a busy database in Ruby:
# sqlite3 1.4's busy_timeout (from `timeout`) sleeps inside SQLite holding Ruby's GVL, so the
# thread that holds the write lock cannot finish while another waits for it, and under load
# the waiter gives up with "database is locked" (CI saw it with 8 writer threads). Ruby's
# `sleep` lets the holder run; the wait ends after the same 5 s (what Rails 7.1 does).
module Stacklab
  module SqliteWal
    BUSY_WAIT = 5.0

    def configure_connection
      super
      deadline = nil
      @connection.busy_handler do |count|
        now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        deadline = now + BUSY_WAIT if count.zero?
        next false if now > deadline

        sleep(0.001 * [count + 1, 10].min)
        true
      end
      execute("PRAGMA journal_mode = WAL")
    end
  end
end
require "active_record/connection_adapters/sqlite3_adapter"
ActiveRecord::ConnectionAdapters::SQLite3Adapter.prepend(Stacklab::SqliteWal)
