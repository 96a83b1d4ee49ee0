"""The launch contract (CONTRACT.md §1): first line, credential on stdin only, health, config
errors named, and a graceful exit on stdin EOF and on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

from conftest import PYTHON_START, START_DEADLINE, STOP_DEADLINE, start_process


def test_first_line_health_and_exit_on_stdin_eof(control):
    inst = start_process(PYTHON_START, control.credential, control.url)
    assert inst.url.startswith("http://127.0.0.1:") and inst.port > 0
    r = inst.request("GET", "/healthz")
    assert (r.status, r.body["status"]) == (200, "ok")
    assert set(r.body["limits"]) == {"hashing", "benchmarks", "graphql_hashes_refused"}, r.body
    assert r.headers["content-type"] == "application/json"
    assert r.headers["server-timing"].startswith("backend;dur=")
    # The credential is in neither the arguments nor the environment of the process.
    cmdline = open(f"/proc/{inst.proc.pid}/cmdline", "rb").read()
    environ = open(f"/proc/{inst.proc.pid}/environ", "rb").read()
    assert control.credential.encode() not in cmdline
    assert control.credential.encode() not in environ
    assert inst.stop() == 0, "".join(inst.stderr_lines)
    assert control.credential not in "".join(inst.stderr_lines), "the credential is never logged"


def test_sigterm_lets_a_request_in_flight_finish(control, make_stack):
    d = make_stack(password_storage="argon2id")
    inst = start_process(PYTHON_START, control.credential, control.url)
    from conftest import Api

    api = Api(inst, d["session"])
    assert api.call("POST", "/api/users", {"username": "ann", "email": "ann@x.io", "password": "password123"}).status == 201
    got = {}

    def slow():
        # A benchmark hashes every mode several times: it is still running when SIGTERM arrives.
        got["r"] = api.call("POST", "/api/analysis/benchmark", {"reads": 300, "writes": 300})

    t = threading.Thread(target=slow)
    t.start()
    # The request is in flight once its rows show in the database.
    from conftest import wait_until

    wait_until("the benchmark started", lambda: api.call("GET", "/api/analysis").body["database"]["rows"] > 1)
    inst.proc.send_signal(signal.SIGTERM)
    t.join(STOP_DEADLINE * 4)
    assert got["r"].status == 200, got["r"].raw
    assert inst.proc.wait(STOP_DEADLINE) == 0
    assert any("SIGTERM" in line for line in inst.stderr_lines)


def _run_failing(argv: list[str], stdin: bytes) -> tuple[int, str, str]:
    p = subprocess.run(argv, input=stdin, capture_output=True, timeout=START_DEADLINE)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_no_credential_or_bad_config_is_refused_before_listening(control, tmp_path):
    base = [*PYTHON_START, "--addr", "127.0.0.1:0", "--control-url", control.url]
    rc, out, err = _run_failing([*base, "--token-stdin"], b"\n")
    assert rc != 0 and out == "" and "no token" in err
    rc, out, err = _run_failing(base, b"x\n")
    assert rc != 0 and "--token-stdin" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[backend]\nbcrypt_cost = 40\ngraphql_max_depth = 0\nno_such_key = 1\n[proxy]\nanything = true\n")
    rc, out, err = _run_failing([*base, "--token-stdin", "--config", str(bad)], b"x\n")
    assert rc != 0 and out == ""
    assert "unknown field `no_such_key`" in err
    bad.write_text("[backend]\nbcrypt_cost = 40\ngraphql_max_depth = 0\n")
    rc, out, err = _run_failing([*base, "--token-stdin", "--config", str(bad)], b"x\n")
    assert "backend.bcrypt_cost: must be between 4 and 16" in err
    assert "backend.graphql_max_depth: must be at least 1" in err


def test_other_sections_of_the_config_are_ignored(control, tmp_path):
    cfg = tmp_path / "full.toml"
    cfg.write_text('[admin]\ntoken = "ignored"\n[backend]\nmax_sessions = 3\n[edge]\nlisten = "x"\n')
    inst = start_process(PYTHON_START, control.credential, control.url, cfg)
    assert inst.request("GET", "/healthz").status == 200
    assert inst.stop() == 0


def test_check_says_ok_or_what_is_missing(tmp_path):
    p = subprocess.run([*PYTHON_START, "--check"], capture_output=True, timeout=START_DEADLINE)
    assert p.returncode == 0, p.stderr
    env = {**os.environ, "STACKLAB_PYTHON_VENV": str(tmp_path / "no-venv")}
    p = subprocess.run([*PYTHON_START, "--check"], capture_output=True, timeout=START_DEADLINE, env=env)
    assert p.returncode != 0
    assert "setup.sh" in p.stderr.decode().strip().splitlines()[-1]


def test_runtime_manifest_names_the_runtime():
    import tomllib

    from conftest import RUNTIME

    m = tomllib.loads((RUNTIME / "runtime.toml").read_text())
    assert (m["name"], m["label"]) == ("python", "Python (Flask)")
    assert m["start"] == ["./bin/stacklab-python"] and m["check"] == ["./bin/stacklab-python", "--check"]
    assert json.dumps(m["description"]).count(".") >= 1
