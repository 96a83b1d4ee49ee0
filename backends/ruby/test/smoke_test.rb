# frozen_string_literal: true

require_relative "test_helper"

class SmokeTest < StackTest
  def test_users_round_trip_on_sqlite_memory
    i = instance
    s = session(sqlite_descriptor)
    status, body, res = i.request("POST", "/api/users", body: { "username" => "ann", "email" => "ann@example.com", "password" => "password1" }, session: s)
    assert_equal 201, status, body.inspect
    assert_equal "bypass", res["x-stacklab-cache"]
    assert_match(/\Abackend;dur=\d+\.\d{3}, cache;dur=\d+\.\d{3}, db;dur=\d+\.\d{3}\z/, res["server-timing"])
    id = body["id"]
    _, _, res = i.request("GET", "/api/users/#{id}", session: s)
    assert_equal "miss", res["x-stacklab-cache"]
    status, got, res = i.request("GET", "/api/users/#{id}", session: s)
    assert_equal [200, "hit"], [status, res["x-stacklab-cache"]]
    assert_equal "ann@example.com", got["email"]
  end
end
