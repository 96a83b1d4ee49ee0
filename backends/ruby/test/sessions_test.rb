# frozen_string_literal: true

require_relative "test_helper"
require "pg"

# Many sessions on one instance: each only ever reaches its own database, its connections are
# bounded, idle sessions are closed, and the least recently used goes past max_sessions.
class SessionsTest < StackTest
  def pg_database(test)
    admin_url = Stack.engine(test, "STACKLAB_TEST_POSTGRES_URL")
    name = "rb_#{SecureRandom.hex(6)}"
    admin = PG.connect(admin_url)
    admin.exec("CREATE DATABASE #{name}")
    (@pg_cleanup ||= []) << [admin, name]
    u = URI(admin_url)
    u.path = "/#{name}"
    [u.to_s, name, admin]
  end

  def teardown
    super
    @pg_cleanup&.each do |admin, name|
      admin.exec("DROP DATABASE IF EXISTS #{name} WITH (FORCE)")
      admin.close
    end
  end

  def create(i, s, name)
    i.request("POST", "/api/users", body: { "username" => name, "email" => "#{name}@example.com", "password" => "password1" }, session: s)
  end

  # Interleaved requests of two sessions on two databases, from many threads at once: every
  # answer holds the asking session's rows only.
  def test_a_session_only_ever_uses_its_own_database
    url_a, = pg_database(self)
    url_b, = pg_database(self)
    i = instance
    a = session({ "session" => Stack.code, "database" => { "engine" => "postgres", "url" => url_a },
                  "cache" => { "engine" => "none" }, "password_storage" => "plaintext" })
    b = session({ "session" => Stack.code, "database" => { "engine" => "postgres", "url" => url_b },
                  "cache" => { "engine" => "none" }, "password_storage" => "plaintext" })
    c = session(sqlite_descriptor.merge("password_storage" => "plaintext"))
    threads = 8.times.map do |t|
      Thread.new do
        inst = Instance.allocate
        http = Net::HTTP.start("127.0.0.1", i.port)
        out = []
        10.times do |n|
          [[a, "a"], [b, "b"], [c, "c"]].each do |code, tag|
            req = Net::HTTP::Post.new("/api/users", "content-type" => "application/json", "x-stacklab-session" => code)
            req.body = JSON.generate({ "username" => "#{tag}-#{t}-#{n}", "email" => "#{tag}#{t}x#{n}@example.com", "password" => "password1" })
            res = http.request(req)
            out << [tag, res.code == "201" ? "201" : "#{res.code} #{res.body}"]
            list = http.request(Net::HTTP::Get.new("/api/users?limit=100", "x-stacklab-session" => code))
            out << [tag, JSON.parse(list.body)["items"].map { |u| u["username"][0] }.uniq]
          end
        end
        http.finish
        inst && out
      end
    end
    threads.flat_map(&:value).each do |tag, got|
      got.is_a?(Array) ? assert_equal([tag], got) : assert_equal("201", got)
    end
    { a => 80, b => 80, c => 80 }.each do |code, n|
      assert_equal n, i.request("GET", "/api/users", session: code)[1]["total"]
    end
  end

  def test_connections_per_session_are_bounded_and_idle_sessions_close
    url, name, admin = pg_database(self)
    i = instance(config: "[backend]\ndb_connections_per_session = 2\nsession_idle_ms = 400\n")
    s = session({ "session" => Stack.code, "database" => { "engine" => "postgres", "url" => url },
                  "cache" => { "engine" => "none" }, "password_storage" => "plaintext" })
    assert_equal 201, create(i, s, "first")[0]
    peak = 0
    watcher = Thread.new do
      40.times do
        n = admin.exec_params("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", [name]).getvalue(0, 0).to_i
        peak = [peak, n].max
        sleep 0.02
      end
    end
    12.times.map do |t|
      Thread.new do
        http = Net::HTTP.start("127.0.0.1", i.port)
        8.times { http.request(Net::HTTP::Get.new("/api/users?q=#{t}", "x-stacklab-session" => s)) }
        http.finish
      end
    end.each(&:join)
    watcher.join
    assert_operator peak, :<=, 2, "at most db_connections_per_session connections"
    assert_operator peak, :>=, 1
    # Idle: the sweep closes the session and its connections.
    deadline = Time.now + 5
    n = nil
    loop do
      n = admin.exec_params("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", [name]).getvalue(0, 0).to_i
      break if n.zero? || Time.now > deadline

      sleep 0.1
    end
    assert_equal 0, n, "an idle session's connections are closed"
    # And it reopens on its next request.
    assert_equal 1, i.request("GET", "/api/users", session: s)[1]["total"]
  end

  def test_past_max_sessions_the_least_recently_used_is_closed_and_reopens
    i = instance(config: "[backend]\nmax_sessions = 2\n")
    codes = 3.times.map { session(sqlite_descriptor) }
    codes.each { |c| assert_equal 201, create(i, c, "u#{c[0, 6]}")[0] }
    codes.each { |c| assert_equal 1, i.request("GET", "/api/users", session: c)[1]["total"] }
  end

  def test_a_session_control_forgot_is_gone
    i = instance(config: "[backend]\ndescriptor_ttl_ms = 100\n")
    s = session(sqlite_descriptor)
    assert_equal 200, i.request("GET", "/api/users", session: s)[0]
    @control.forget(s)
    sleep 0.2
    status, body, = i.request("GET", "/api/users", session: s)
    assert_equal [410, "session_expired"], [status, body["error"]["code"]]
  end

  def test_stdin_eof_and_sigterm_let_requests_finish_and_exit_zero
    [:stdin, "TERM"].each do |how|
      i = instance
      s = session(sqlite_descriptor.merge("password_storage" => "argon2id"))
      slow = Thread.new do
        i.request("POST", "/api/analysis/benchmark", body: { "reads" => 300, "writes" => 300 }, session: s)
      end
      sleep 0.5
      how == :stdin ? i.instance_variable_get(:@stdin).close : i.signal(how)
      status, = slow.value
      assert_equal 200, status
      assert_equal 0, i.wait.exitstatus, i.log
      @instances.delete(i)
    end
  end

  def test_bad_config_is_refused_naming_the_key
    path = File.join(Dir.tmpdir, "bad-#{SecureRandom.hex(4)}.toml")
    File.write(path, "[backend]\nbcrypt_cost = 40\nnope = 1\n")
    out = IO.popen([File.join(ROOT, "bin/stacklab-ruby"), "--config", path, "--token-stdin"], err: [:child, :out], in: :close, &:read)
    refute $?.success?
    assert_match(/backend: unknown field `nope`/, out)
    out = IO.popen([File.join(ROOT, "bin/stacklab-ruby"), "--token-stdin"], err: [:child, :out], in: :close, &:read)
    refute $?.success?
    assert_match(/no token/, out)
  end
end
