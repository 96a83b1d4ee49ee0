# frozen_string_literal: true

# The Ruby runtime's own tests: real instances (bin/stacklab-ruby) on port 0, against a
# descriptor server standing in for control, on the engines scripts/test starts
# (STACKLAB_TEST_POSTGRES_URL, _MYSQL_URL, _REDIS_URL, _MEMCACHED_ADDR). An engine that is not
# there fails the test under STACKLAB_REQUIRE_SERVICES=1 and skips it, saying so, otherwise.
# Each test starts its own instances and waits on them more than it computes: tests run four at
# a time (MT_CPU overrides).
ENV["MT_CPU"] ||= "4"
require "minitest/autorun"
require "json"
require "net/http"
require "securerandom"
require "socket"
require "tmpdir"
require "uri"

ROOT = File.expand_path("..", __dir__)
$LOAD_PATH.unshift(File.join(ROOT, "lib"))

module Stack
  module_function

  def required? = ENV.fetch("STACKLAB_REQUIRE_SERVICES", "0") == "1"

  # The URL of an engine, or a skip (a failure under CI).
  def engine(test, var)
    url = ENV[var].to_s
    return url unless url.empty?

    msg = "#{var} is not set: start the engines with scripts/test --run"
    raise Minitest::Assertion, "#{msg}, and STACKLAB_REQUIRE_SERVICES=1" if required?

    test.skip(msg)
  end

  def code = SecureRandom.alphanumeric(32)
end

# Control's admin API as an instance sees it: descriptors by code, and the policy changes it is told.
class FakeControl
  attr_reader :url, :policy_changes, :fetches

  def initialize(token)
    @token = token
    @stacks = {}
    @policy_changes = []
    @fetches = Hash.new(0)
    @lock = Mutex.new
    @server = TCPServer.new("127.0.0.1", 0)
    @url = "http://127.0.0.1:#{@server.addr[1]}"
    @thread = Thread.new { loop { serve(@server.accept) } rescue IOError }
  end

  def put(descriptor) = @lock.synchronize { @stacks[descriptor["session"]] = descriptor }
  def forget(code) = @lock.synchronize { @stacks.delete(code) }

  def close
    @server.close
    @thread.join(1)
  end

  private

  def serve(sock)
    Thread.new do
      request = sock.gets.to_s
      headers = {}
      while (line = sock.gets) && line != "\r\n"
        k, v = line.split(":", 2)
        headers[k.downcase] = v.strip
      end
      body = headers["content-length"] ? sock.read(headers["content-length"].to_i) : ""
      method, path = request.split(" ")
      status, out = answer(method, path, headers, body)
      sock.write("HTTP/1.1 #{status} X\r\ncontent-type: application/json\r\ncontent-length: #{out.bytesize}\r\nconnection: close\r\n\r\n#{out}")
    ensure
      sock.close
    end
  end

  def answer(method, path, headers, body)
    return [401, "{}"] unless headers["authorization"] == "Bearer #{@token}"

    if method == "GET" && (m = %r{\A/admin/stacks/([^/]+)\z}.match(path))
      d = @lock.synchronize { @fetches[m[1]] += 1; @stacks[m[1]] }
      d ? [200, JSON.generate(d)] : [404, "{}"]
    elsif method == "PUT" && (m = %r{\A/admin/stacks/([^/]+)/cache-policy\z}.match(path))
      @lock.synchronize { @policy_changes << [m[1], JSON.parse(body)["policy"]] }
      [200, "{}"]
    else
      [404, "{}"]
    end
  end
end

# One running instance of bin/stacklab-ruby.
class Instance
  attr_reader :port, :stderr_path

  def initialize(control_url, token, config: nil, env: {})
    @stderr_path = File.join(Dir.tmpdir, "stacklab-ruby-#{SecureRandom.hex(4)}.log")
    args = [File.join(ROOT, "bin/stacklab-ruby"), "--addr", "127.0.0.1:0", "--control-url", control_url, "--token-stdin"]
    if config
      @config_path = File.join(Dir.tmpdir, "stacklab-ruby-#{SecureRandom.hex(4)}.toml")
      File.write(@config_path, config)
      args += ["--config", @config_path]
    end
    @stdin_r, @stdin = IO.pipe
    @stdout, out_w = IO.pipe
    @pid = Process.spawn(env, *args, in: @stdin_r, out: out_w, err: @stderr_path)
    @stdin_r.close
    out_w.close
    @stdin.write("#{token}\n")
    @stdin.flush
    line = @stdout.gets.to_s
    m = %r{\Astacklab backend on http://127\.0\.0\.1:(\d+)\n\z}.match(line) or
      raise "the instance did not start: #{line.inspect}; stderr: #{File.read(@stderr_path)}"
    @port = m[1].to_i
    @http = Net::HTTP.start("127.0.0.1", @port)
  end

  def request(method, path, body: nil, headers: {}, session: nil, raw: nil, content_type: "application/json")
    req = Net::HTTPGenericRequest.new(method, !(body.nil? && raw.nil?), true, path)
    req["x-stacklab-session"] = session if session
    headers.each { |k, v| req[k] = v }
    unless body.nil? && raw.nil?
      req["content-type"] = content_type if content_type
      req.body = raw || JSON.generate(body)
    end
    res = @http.request(req)
    [res.code.to_i, (JSON.parse(res.body) rescue res.body), res]
  end

  # Closes stdin (control going away) and waits for the exit status.
  def stop(timeout = 15)
    @http&.finish rescue nil
    @stdin.close unless @stdin.closed?
    wait(timeout)
  end

  def signal(sig) = Process.kill(sig, @pid)

  def wait(timeout = 15)
    deadline = Time.now + timeout
    while Time.now < deadline
      _, status = Process.waitpid2(@pid, Process::WNOHANG)
      return status if status

      sleep 0.05
    end
    Process.kill("KILL", @pid)
    Process.waitpid2(@pid)[1]
  end

  def log = File.read(@stderr_path)
end

# A test with a control stand-in and one instance, stopped afterwards.
class StackTest < Minitest::Test
  parallelize_me!

  TOKEN = "test-credential-#{SecureRandom.hex(8)}"

  def setup
    @control = FakeControl.new(TOKEN)
  end

  def teardown
    @instances&.each(&:stop)
    @control.close
  end

  def instance(**opts)
    (@instances ||= []) << Instance.new(@control.url, TOKEN, **opts)
    @instances.last
  end

  def sqlite_descriptor(cache: { "engine" => "memory" }, **extra)
    dir = Dir.mktmpdir("stacklab-ruby")
    { "session" => Stack.code, "runtime" => "ruby",
      "database" => { "engine" => "sqlite", "url" => "sqlite://#{dir}/db.sqlite?mode=rwc" },
      "cache" => cache, "password_storage" => "sha256" }.merge(extra)
  end

  def session(descriptor)
    @control.put(descriptor)
    descriptor["session"]
  end
end
