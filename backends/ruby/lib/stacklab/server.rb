# frozen_string_literal: true

require "optparse"

module Stacklab
  # The instance process (CONTRACT.md §1): arguments, the credential on stdin, Rails on Puma,
  # shutdown.
  #
  # One Puma process with a pool of threads (THREADS), never cluster mode: a session's in-process
  # cache must be one per instance. The first stdout line says where it listens; stdin reaching
  # EOF (control went away), SIGTERM or SIGINT stop it: the listener closes, requests in flight get
  # up to DRAIN_S to finish, the sessions' connections close, and the process exits 0.
  module Server
    DRAIN_S = 10
    THREADS = 16

    module_function

    def parse(argv)
      opts = {}
      OptionParser.new do |o|
        o.banner = "usage: stacklab-ruby --addr HOST:PORT --control-url URL --token-stdin [--config FILE]"
        o.on("--addr HOST:PORT", "listen there (port 0 picks one); overrides backend.addr") { |v| opts[:addr] = v }
        o.on("--control-url URL", "control's admin URL; overrides backend.control_url") { |v| opts[:control_url] = v }
        o.on("--token-stdin", "read the runtime credential from the first line of stdin; exit when stdin closes") { opts[:token_stdin] = true }
        o.on("--config FILE", "a stacklab TOML file; its [backend] section is read") { |v| opts[:config] = v }
        o.on("--check", "exit 0 when every dependency loads") { opts[:check] = true }
      end.parse!(argv)
      opts
    end

    # Loads everything an instance needs; says what is missing.
    def check
      %w[rails action_controller active_record puma graphql pg mysql2 sqlite3 redis dalli bcrypt rbnacl toml-rb].each do |lib|
        require lib
      rescue LoadError => e
        $stderr.puts "the Ruby runtime's gem for `#{lib}` is missing (#{e.message}); run backends/ruby/setup.sh"
        return 1
      end
      begin
        require_relative "passwords"
        Stacklab::Sodium.argon2id("x" * 8, ("s" * 16).b, 1, 8192, 32)
        require_relative "../../config/environment"
      rescue StandardError, LoadError => e
        $stderr.puts "the Ruby runtime cannot start: #{e.class}: #{e.message.lines.first&.strip}"
        return 1
      end
      puts "ok"
      0
    end

    def main(argv)
      opts = begin
        parse(argv.dup)
      rescue OptionParser::ParseError => e
        $stderr.puts "stacklab-ruby: #{e.message}"
        return 2
      end
      return check if opts[:check]

      require_relative "config"
      begin
        config = Config.load(opts[:config])
        addr = opts[:addr] ? Config.parse_addr(opts[:addr]) : config.addr
      rescue Config::Invalid => e
        e.problems.each { |k, m| $stderr.puts "#{k}: #{m}" }
        return 1
      rescue ArgumentError
        $stderr.puts "--addr: `#{opts[:addr]}` is not `host:port`"
        return 1
      end
      control_url = opts[:control_url] || config.control_url
      unless opts[:token_stdin]
        $stderr.puts "stacklab-ruby takes its credential only from stdin: pass --token-stdin"
        return 1
      end
      credential = $stdin.gets.to_s.strip
      if credential.empty?
        $stderr.puts "--token-stdin: no token on the first line of stdin"
        return 1
      end

      ENV["RAILS_ENV"] = ENV["RACK_ENV"] = "production"
      require_relative "../../config/environment"
      require "puma"
      require "puma/events"
      require "puma/server"
      logger = Rails.logger

      guard = Guard.new(max_hashes: config["max_concurrent_hashes"], hash_wait_ms: config["hash_wait_ms"],
                        max_benchmarks: config["max_concurrent_benchmarks"])
      sessions = Sessions.new(Control.new(control_url, credential, logger), config, guard, logger)
      Runtime.current = Runtime.new(config, sessions, guard, credential)
      app = InFlight.new(Rails.application)

      server = Puma::Server.new(app, Puma::Events.new($stderr, $stderr),
                                min_threads: 0, max_threads: THREADS, environment: "production",
                                force_shutdown_after: DRAIN_S, queue_requests: true,
                                lowlevel_error_handler: lambda { |_err, _env, status = 500|
                                  err = status == 500 ? ApiError.internal("puma") : ApiError.bad_request("the request could not be read; send it again")
                                  [err.status, { "content-type" => "application/json",
                                                 "Server-Timing" => "backend;dur=0.000, cache;dur=0.000, db;dur=0.000" },
                                   [err.to_json]]
                                })
      listener = begin
        server.add_tcp_listener(addr[0], addr[1])
      rescue SystemCallError => e
        $stderr.puts "cannot bind the backend on #{addr[0]}:#{addr[1]}: #{e.message}"
        return 1
      end
      host, port = listener.local_address.then { |a| [a.ip_address, a.ip_port] }
      server.run(true)
      $stdout.write("stacklab backend on http://#{host.include?(':') ? "[#{host}]" : host}:#{port}\n")
      $stdout.flush

      stop = Queue.new
      # The parent holds our stdin open for as long as it lives.
      Thread.new do
        loop { $stdin.readpartial(4096) }
      rescue EOFError, IOError
        logger.info("stdin closed: stopping")
        stop << :stdin
      end
      %w[TERM INT].each { |sig| Signal.trap(sig) { stop << sig } }
      interval = (config["session_idle_ms"] / 4000.0).clamp(0.05, 30.0)
      Thread.new do
        loop do
          sleep interval
          begin
            sessions.sweep
          rescue StandardError => e
            logger.error("session sweep failed: #{e.message}")
          end
        end
      end

      why = stop.pop
      logger.info("#{why}: stopping")
      # Stop accepting, let requests in flight finish (Puma gives them DRAIN_S), then close.
      server.stop(true)
      app.wait_idle(1)
      sessions.close_all
      $stdout.flush
      $stderr.flush
      0
    end
  end
end
