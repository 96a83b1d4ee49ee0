"""The bounds on hashing and benchmarks (CONTRACT.md §9a, issue 22 §4), asked of the Python and
the Rust runtime alike over real sockets: the same limits, numbers and codes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from conftest import Api, rust_binary, start_process, wait_until

# One hash at a time, 20 ms of waiting, ~250 ms per bcrypt hash: a burst must be refused.
LIMITS = """bcrypt_cost = 12
max_concurrent_hashes = 1
hash_wait_ms = 20
graphql_max_hashes = 3
max_concurrent_benchmarks = 1
"""


@pytest.fixture(params=["python", "rust"])
def instance(request, control, tmp_path, start_python):
    if request.param == "python":
        yield start_python(LIMITS)
        return
    binary = rust_binary()
    if not binary.exists():
        if os.environ.get("STACKLAB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{binary} is missing, and STACKLAB_REQUIRE_SERVICES=1")
        pytest.skip(f"{binary} is missing: cargo build -p stacklab --bin stacklab")
    config: Path = tmp_path / "rust-guards.toml"
    config.write_text(f"[backend]\n{LIMITS}")
    env = {k: v for k, v in os.environ.items() if k != "STACKLAB_ADMIN_TOKEN"}
    inst = start_process([str(binary), "backend"], control.credential, control.url, config, env)
    yield inst
    inst.stop()


def limits(inst) -> dict:
    r = inst.request("GET", "/healthz")
    assert r.status == 200
    return r.body["limits"]


def test_hashes_per_request_and_per_instance_and_benchmarks_are_bounded(instance, make_stack):
    one = Api(instance, make_stack(password_storage="bcrypt")["session"])
    two = Api(instance, make_stack(password_storage="bcrypt")["session"])
    r = one.call("POST", "/api/users", {"username": "ann", "email": "ann@example.com", "password": "pw-ann-long"})
    assert r.status == 201, r.body
    uid = r.body["id"]

    def verify(n: int) -> str:
        return " ".join(f'v{i}: verifyPassword(id: {uid}, password: "pw-ann-long")' for i in range(n))

    started = limits(instance)["hashing"]["started"]
    r = one.graphql(f"mutation {{ {verify(4)} }}")
    assert (r.status, r.field) == (400, "query"), r.body
    assert "4 password hashes" in r.body["error"]["message"]
    r = one.graphql(
        f"mutation($i: UpdateUserInput!) {{ {verify(2)} a: updateUser(id: {uid}, input: $i) {{ id }}"
        f" b: updateUser(id: {uid}, input: $i) {{ id }} }}",
        {"i": {"password": "another-long-one"}},
    )
    assert (r.status, r.field) == (400, "query"), r.body
    got = limits(instance)
    assert got["hashing"]["started"] == started and got["graphql_hashes_refused"] == 2, got
    r = one.graphql(f"mutation {{ {verify(3)} }}")
    assert r.status == 200 and r.body["data"]["v2"] is True, r.body

    answers = []

    def signup(i: int):
        answers.append(one.call("POST", "/api/users", {
            "username": f"burst{i}", "email": f"burst{i}@example.com", "password": "pw-burst-long"}))

    threads = [threading.Thread(target=signup, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(a.status for a in answers)
    assert set(statuses) <= {201, 503} and 201 in statuses and 503 in statuses, statuses
    for a in answers:
        if a.status == 503:
            assert a.code == "busy" and a.headers.get("retry-after") == "1", (a.body, a.headers)
    created = statuses.count(201)
    assert one.call("GET", "/api/users?q=burst").body["total"] == created
    assert limits(instance)["hashing"]["refused"] >= statuses.count(503)

    result = {}
    long = threading.Thread(target=lambda: result.setdefault(
        "r", one.call("POST", "/api/analysis/benchmark", {"reads": 2000, "writes": 2000})))
    long.start()
    wait_until("the benchmark runs", lambda: limits(instance)["benchmarks"]["running"] == 1, 30)
    r = one.call("POST", "/api/analysis/benchmark", {"reads": 1, "writes": 1})
    assert (r.status, r.code) == (409, "benchmark_running"), r.body
    r = two.call("POST", "/api/analysis/benchmark", {"reads": 1, "writes": 1})
    assert (r.status, r.code, r.headers.get("retry-after")) == (503, "busy", "1"), r.body
    long.join(120)
    assert result["r"].status == 200, result["r"].body
    assert two.call("POST", "/api/analysis/benchmark", {"reads": 1, "writes": 1}).status == 200
    b = limits(instance)["benchmarks"]
    assert (b["refused_session"], b["refused_busy"]) == (1, 1), b
