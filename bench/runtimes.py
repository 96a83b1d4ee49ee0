#!/usr/bin/env python3
"""Runtimes side by side: the same `POST /api/analysis/benchmark` on each runtime, same stacks.

Starts a real `stacklab up` (the release binary by default) from the repository root with
every runtime's pool warm and one instance each, measures each idle instance's memory (RSS of
its process, before any session), then for each runtime and each stack — SQLite × in-process
cache (embedded) and PostgreSQL × Redis (shared servers, from STACKLAB_TEST_POSTGRES_URL and
STACKLAB_TEST_REDIS_URL) — makes a session through the edge, runs the benchmark once to warm
up and once to measure, and prints a Markdown table (also written to bench/results/runtimes.md
and .json).

    scripts/test --run python3 bench/runtimes.py [--reads 1000] [--writes 500] [--bin PATH]

Standard library only. The figures come from the backends' own benchmark (backends/CONTRACT.md
§9): latencies inside the instance, not through the edge.
"""

import argparse
import http.cookiejar
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACKS = [
    ("SQLite × in-process", {"provisioner": "embedded", "database": "sqlite", "cache": "memory"}),
    ("PostgreSQL × Redis", {"provisioner": "shared", "database": "postgres", "cache": "redis"}),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runtimes_in_backends() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "backends").glob("*/runtime.toml"))


def config(tmp: Path) -> Path:
    text = (ROOT / "config/stacklab.toml").read_text()
    runtimes = runtimes_in_backends()
    text = re.sub(r'(?m)^warm_runtimes = .*$', "warm_runtimes = " + json.dumps(runtimes), text)
    for key, var in [("postgres_url", "STACKLAB_TEST_POSTGRES_URL"), ("redis_url", "STACKLAB_TEST_REDIS_URL")]:
        url = os.environ.get(var)
        if not url:
            sys.exit(f"{var} is not set: run this with scripts/test --run python3 bench/runtimes.py")
        text = re.sub(rf'(?m)^{key} = ""$', f"{key} = {json.dumps(url)}", text)
    path = tmp / "stacklab.toml"
    path.write_text(text)
    return path


class Client:
    def __init__(self, edge: int):
        self.base = f"https://127.0.0.1:{edge}"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the edge's own self-signed certificate, on loopback
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ctx),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        )

    def call(self, method: str, path: str, body=None, timeout=600):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with self.opener.open(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def admin(port: int, token: str, path: str):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.expanduser(
        os.environ.get("CARGO_TARGET_DIR", "~/.cache/stacklab-target") + "/release/stacklab"))
    ap.add_argument("--reads", type=int, default=1000)
    ap.add_argument("--writes", type=int, default=500)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stacklab-runtimes-"))
    edge, http_port, admin_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKLAB_TEST_")}
    env.update({
        "STACKLAB_EDGE_ADDR": f"127.0.0.1:{edge}",
        "STACKLAB_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "STACKLAB_ADMIN_ADDR": f"127.0.0.1:{admin_port}",
        "STACKLAB_DATA_DIR": str(tmp / "data"),
        "STACKLAB_BACKEND_INSTANCES": "1",
        "STACKLAB_LOG": "warn",
    })
    log = open(tmp / "up.log", "w")
    up = subprocess.Popen([args.bin, "up", "--config", str(config(tmp))], cwd=ROOT, env=env,
                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        token_file = tmp / "data/admin.token"
        while True:
            if up.poll() is not None:
                sys.exit(f"stacklab up exited ({up.returncode}); its log: {tmp / 'up.log'}")
            try:
                instances = admin(admin_port, token_file.read_text().strip(), "/admin/instances")["instances"]
                if {i["pool"] for i in instances} >= {"rust", *runtimes_in_backends()}:
                    break
            except (OSError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                sys.exit(f"the pools did not start within 120 s; see {tmp / 'up.log'}")
            time.sleep(0.2)
        time.sleep(2)  # let start-up allocations settle before reading idle memory
        idle = {i["pool"]: round(rss_mib(i["pid"]), 1) for i in instances}
        results = {"reads": args.reads, "writes": args.writes, "idle_rss_mib": idle, "runs": []}
        for runtime in sorted(idle):
            for name, stack in STACKS:
                c = Client(edge)
                status, s = c.call("POST", "/api/sessions", {"runtime": runtime, **stack})
                if status != 201:
                    sys.exit(f"{runtime} {name}: {status} {s}")
                body = {"reads": args.reads, "writes": args.writes}
                c.call("POST", "/api/analysis/benchmark", body)  # warm-up
                status, b = c.call("POST", "/api/analysis/benchmark", body)
                if status != 200:
                    sys.exit(f"{runtime} {name}: benchmark {status} {b}")
                hashing = {h["mode"]: h["ms"] for h in b["password_hashing"]}
                results["runs"].append({
                    "runtime": runtime, "stack": name,
                    "db_read_p50_ms": b["db_reads"]["p50_ms"], "db_read_p99_ms": b["db_reads"]["p99_ms"],
                    "cached_read_p50_ms": b["cached_reads"]["p50_ms"],
                    "write_p50_ms": b["writes"]["p50_ms"], "hash_ms": hashing,
                })
                c.call("DELETE", "/api/session")
    finally:
        up.terminate()
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
    modes = ["plaintext", "sha256", "bcrypt", "bcrypt-pepper", "argon2id"]
    lines = [
        f"Runtimes side by side ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"`bench/runtimes.py`, {args.reads} reads / {args.writes} writes, one instance each, "
        "release build; ms inside the instance):", "",
        "| runtime | stack | db read p50 | db read p99 | cache-hit read p50 | write p50 | "
        + " | ".join(f"hash {m}" for m in modes) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(modes),
    ]
    for r in results["runs"]:
        lines.append(f"| {r['runtime']} | {r['stack']} | {r['db_read_p50_ms']:.3f} | {r['db_read_p99_ms']:.3f} | "
                     f"{r['cached_read_p50_ms']:.3f} | {r['write_p50_ms']:.3f} | "
                     + " | ".join(f"{r['hash_ms'].get(m, float('nan')):.3f}" for m in modes) + " |")
    lines += ["", "Idle instance memory (RSS, before any session): "
              + ", ".join(f"{k} {v} MiB" for k, v in sorted(idle.items())), ""]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "runtimes.md").write_text(text)
    (out / "runtimes.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
