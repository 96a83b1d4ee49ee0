# frozen_string_literal: true

require_relative "test_helper"
require "base64"

# Rows and cache entries written by the Python runtime, read, verified and decrypted by this
# one, and the other way round: every password mode, and encryption at rest, over Redis.
class CrossRuntimeTest < StackTest
  PYTHON = File.expand_path("../../python/bin/stacklab-python", __dir__)

  def python
    ok = system(PYTHON, "--check", out: File::NULL, err: File::NULL)
    unless ok
      msg = "the Python runtime is not set up (backends/python/setup.sh)"
      raise Minitest::Assertion, "#{msg}, and STACKLAB_REQUIRE_SERVICES=1" if Stack.required?

      skip msg
    end
    i = Instance.allocate
    i.send(:initialize_python, @control.url, TOKEN)
    (@instances ||= []) << i
    i
  end

  def test_rows_and_cache_entries_cross_between_python_and_ruby
    redis = Stack.engine(self, "STACKLAB_TEST_REDIS_URL")
    py = python
    rb = instance
    key = Base64.strict_encode64(SecureRandom.random_bytes(32))
    modes = %w[plaintext sha256 bcrypt bcrypt-pepper argon2id].map { |m| [m, "none"] } + [["argon2id", "aes-256-gcm"]]
    modes.each_with_index do |(mode, enc), n|
      d = sqlite_descriptor(cache: { "engine" => "redis", "url" => redis, "key_prefix" => "x#{SecureRandom.hex(4)}:" },
                            "password_storage" => mode, "pepper" => "pep", "encryption" => enc,
                            "encryption_key" => key, "write_policy" => "write-through")
      s = session(d)
      writer, reader = n.even? ? [py, rb] : [rb, py]
      status, user, = writer.request("POST", "/api/users", body: { "username" => "cross#{n}", "email" => "Cross#{n}@Example.com",
                                                                   "password" => "correct horse", "full_name" => "Zoë" }, session: s)
      assert_equal 201, status, user.inspect
      status, got, res = reader.request("GET", "/api/users/#{user['id']}", session: s)
      assert_equal [200, "hit"], [status, res["x-stacklab-cache"]], "#{mode}/#{enc}: the writer's cache entry"
      assert_equal user, got
      assert_equal({ "ok" => true }, reader.request("POST", "/api/users/#{user['id']}/verify-password", body: { "password" => "correct horse" }, session: s)[1])
      reader.request("DELETE", "/api/cache", session: s)
      status, got, res = reader.request("GET", "/api/users/#{user['id']}", session: s)
      assert_equal [200, "miss", user], [status, res["x-stacklab-cache"], got], "#{mode}/#{enc}: the writer's row"
      assert_equal 1, reader.request("GET", "/api/users?q=cross#{n}@example.com", session: s)[1]["total"]
    end
  end
end

class Instance
  # The same instance contract, started from the Python runtime's launcher.
  def initialize_python(control_url, token)
    @stderr_path = File.join(Dir.tmpdir, "stacklab-python-#{SecureRandom.hex(4)}.log")
    @stdin_r, @stdin = IO.pipe
    @stdout, out_w = IO.pipe
    @pid = Process.spawn(CrossRuntimeTest::PYTHON, "--addr", "127.0.0.1:0", "--control-url", control_url, "--token-stdin",
                         in: @stdin_r, out: out_w, err: @stderr_path)
    @stdin_r.close
    out_w.close
    @stdin.write("#{token}\n")
    @stdin.flush
    m = %r{\Astacklab backend on http://127\.0\.0\.1:(\d+)\n\z}.match(@stdout.gets.to_s) or raise "python did not start: #{log}"
    @port = m[1].to_i
    @http = Net::HTTP.start("127.0.0.1", @port)
  end
end
