# frozen_string_literal: true

require_relative "test_helper"

# What Rails would answer on its own, and the contract answers otherwise: routing, bodies,
# errors as JSON.
class ApiTest < StackTest
  def setup
    super
    @i = instance
    @s = session(sqlite_descriptor)
  end

  def create(name, **extra)
    @i.request("POST", "/api/users", body: { "username" => name, "email" => "#{name}@example.com", "password" => "password1" }.merge(extra), session: @s)
  end

  def test_routing_follows_the_contract_not_rails
    assert_equal [404, "not_found"], code_of(@i.request("GET", "/nope"))
    assert_equal [404, "not_found"], code_of(@i.request("POST", "/healthz"))
    assert_equal [401, "session_missing"], code_of(@i.request("GET", "/api/nope"))
    assert_equal [404, "not_found"], code_of(@i.request("GET", "/api/nope", session: @s))
    assert_equal [410, "session_expired"], code_of(@i.request("GET", "/api/users", session: "short"))
    assert_equal [410, "session_expired"], code_of(@i.request("GET", "/api/users", session: Stack.code))
    assert_equal [405, "method_not_allowed"], code_of(@i.request("PUT", "/api/users", session: @s, body: {}))
    assert_equal [405, "method_not_allowed"], code_of(@i.request("POST", "/api/users/1", session: @s, body: {}))
    assert_equal [405, "method_not_allowed"], code_of(@i.request("PUT", "/graphql", session: @s, body: {}))
    assert_equal [404, "not_found"], code_of(@i.request("GET", "/api/cache/policy", session: @s))
    assert_equal [404, "not_found"], code_of(@i.request("GET", "/api//users", session: @s))
    assert_equal 200, @i.request("GET", "/api/users/", session: @s)[0]
    assert_equal 200, @i.request("GET", "//api/users", session: @s)[0]
    status, body, res = @i.request("GET", "/healthz")
    assert_equal [200, "ok"], [status, body["status"]]
    assert res["server-timing"]
    assert_equal 2, body["limits"]["benchmarks"]["max"]
    # POST only: no GraphiQL page (it loaded its scripts from a public CDN).
    assert_equal [405, "method_not_allowed"], code_of(@i.request("GET", "/graphql", session: @s))
    assert_equal [401, "session_missing"], code_of(@i.request("GET", "/graphql"))
  end

  def test_bodies_are_checked_strictly
    assert_equal [415, "unsupported_media_type"], code_of(@i.request("POST", "/api/users", raw: "{}", content_type: "text/plain", session: @s))
    assert_equal [400, "bad_request"], code_of(@i.request("POST", "/api/users", raw: "{", session: @s))
    assert_equal [400, "bad_request"], code_of(@i.request("POST", "/api/users", raw: "[1]", session: @s))
    assert_equal [400, "bad_request"], code_of(@i.request("POST", "/api/users", raw: "\xff\xfe".b, session: @s))
    status, body, = @i.request("POST", "/api/users", raw: '{"username":"a","username":"b"}', session: @s)
    assert_equal [400, "invalid", "username"], [status, body["error"]["code"], body["error"]["field"]]
    status, body, = @i.request("POST", "/api/users", body: { "username" => "ann", "email" => "a@b.co", "password" => "password1", "admin" => true }, session: @s)
    assert_equal [400, "invalid", "admin"], [status, body["error"]["code"], body["error"]["field"]]
    status, body, = @i.request("POST", "/api/users", body: { "username" => "ann", "email" => "a@b.co" }, session: @s)
    assert_equal [400, "invalid", "password"], [status, body["error"]["code"], body["error"]["field"]]
    status, body, = @i.request("POST", "/api/users", body: { "username" => 5, "email" => "a@b.co", "password" => "password1" }, session: @s)
    assert_equal [400, "username"], [status, body["error"]["field"]]
    status, body, = @i.request("POST", "/api/users", raw: "{\"username\":\"#{'a' * 70_000}\"}", session: @s)
    assert_equal [413, "body_too_large"], [status, body["error"]["code"]]
    assert_equal 0, @i.request("GET", "/api/users", session: @s)[1]["total"]
  end

  def test_users_rules_and_conflicts
    assert_equal 201, create("ann")[0]
    status, body, = create("ANN", "email" => "other@example.com")
    assert_equal [409, "conflict", "username"], [status, body["error"]["code"], body["error"]["field"]]
    status, body, = create("bob", "email" => "ANN@example.com")
    assert_equal [409, "email"], [status, body["error"]["field"]]
    assert_equal "id", @i.request("GET", "/api/users/abc", session: @s)[1]["error"]["field"]
    assert_equal "id", @i.request("GET", "/api/users/0", session: @s)[1]["error"]["field"]
    assert_equal "limit", @i.request("GET", "/api/users?limit=0", session: @s)[1]["error"]["field"]
    assert_equal "offset", @i.request("GET", "/api/users?offset=x", session: @s)[1]["error"]["field"]
    assert_equal 1, @i.request("GET", "/api/users?q=AN&q=zz", session: @s)[1]["total"]
    assert_equal 0, @i.request("GET", "/api/users?q=a%25", session: @s)[1]["total"]
    status, body, res = @i.request("GET", "/api/users/999", session: @s)
    assert_equal [404, "not_found", "miss"], [status, body["error"]["code"], res["x-stacklab-cache"]]
  end

  def test_graphql_runs_and_refuses
    q = 'mutation { createUser(input: {username: "gql", email: "g@example.com", password: "password1"}) { id createdAt storedPassword } }'
    status, body, = @i.request("POST", "/graphql", body: { "query" => q }, session: @s)
    assert_equal 200, status, body.inspect
    assert body["data"]["createUser"]["createdAt"] > 2**32
    status, body, = @i.request("POST", "/graphql", body: { "query" => "{ user(id: 999) { id } }" }, session: @s)
    assert_equal [200, nil, ["user"], "not_found"], [status, body["data"], body["errors"][0]["path"], body["errors"][0]["extensions"]["code"]]
    status, body, = @i.request("POST", "/graphql", body: { "query" => "{ users { items { id username email fullName storedPassword storedEmail createdAt updatedAt } } }" }, session: @s)
    assert_equal [200, 1], [status, body["data"]["users"]["items"].size]
    ["{ user(id: 1) { id ", "{ nope }", "{ users { items { id } } } { users { total } }"].each do |bad|
      status, body, = @i.request("POST", "/graphql", body: { "query" => bad }, session: @s)
      assert_equal [400, nil, "invalid", "query"], [status, body["data"], body["error"]["code"], body["error"]["field"]], bad
    end
    big = (1..21).map { |n| "u#{n}: users { total }" }.join(" ")
    status, body, = @i.request("POST", "/graphql", body: { "query" => "{ #{big} }" }, session: @s)
    assert_equal [400, "Query is too complex."], [status, body["errors"][0]["message"]]
    status, body, = @i.request("POST", "/graphql", body: { "query" => "{ user(id: 1) { id } }", "variables" => 5 }, session: @s)
    assert_equal [400, "bad_request"], [status, body["error"]["code"]]
    hashes = (1..11).map { |n| "v#{n}: verifyPassword(id: 1, password: \"password1\")" }.join(" ")
    status, body, = @i.request("POST", "/graphql", body: { "query" => "mutation { #{hashes} }" }, session: @s)
    assert_equal [400, "query"], [status, body["error"]["field"]]
    assert_match(/11 password hashes/, body["errors"][0]["message"])
  end

  def test_internal_endpoint_takes_only_the_credential
    status, body, res = @i.request("DELETE", "/internal/sessions/#{@s}")
    assert_equal [401, "unauthorized", "Bearer"], [status, body["error"]["code"], res["www-authenticate"]]
    assert_equal 403, @i.request("DELETE", "/internal/sessions/#{@s}", headers: { "authorization" => "Bearer nope" })[0]
    status, body, = @i.request("DELETE", "/internal/sessions/#{@s}", headers: { "authorization" => "Bearer #{TOKEN}" })
    assert_equal [200, @s], [status, body["closed"]]
  end

  private

  def code_of(answer)
    status, body, res = answer
    assert_includes res["content-type"].to_s, "application/json", "#{status}: #{body.inspect}"
    [status, body.is_a?(Hash) ? body.dig("error", "code") : body]
  end
end
