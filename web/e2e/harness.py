"""What the browser tests stand on: a real `stacklab up` on free loopback ports, and a real
headless Chromium driven through chromedriver (Selenium).

Nothing here sleeps for a fixed time: every wait polls a condition until it holds or its
deadline passes, and a timeout says what it was waiting for and what it last saw.

Environment:
  STACKLAB_BIN                the `stacklab` binary (default: $CARGO_TARGET_DIR/debug/stacklab,
                              CARGO_TARGET_DIR defaulting to ~/.cache/stacklab-target)
  STACKLAB_E2E_EMBEDDED=1     serve the UI copy built into the binary instead of web/ from disk
  STACKLAB_E2E_SCREENSHOTS    where screenshots go (default: <repo>/target/ui-screenshots)
  CHROMIUM, CHROMEDRIVER      the browser and its driver (default: Debian's paths, then PATH)
  STACKLAB_E2E_HEADFUL=1      show the browser window (needs a display)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
UP_LINE = re.compile(r"^stacklab is up: https://localhost:(\d+)/\s*$")


class Missing(Exception):
    """A tool the tests need is not installed."""


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------


def wait_for(cond, what: str, timeout: float = 10.0, every: float = 0.05):
    """Polls `cond()` until it returns something truthy, and returns that. On timeout, fails
    naming `what` and the last value (or exception) seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = cond()
            if value:
                return value
            last = value
        except Exception as e:  # a stale element mid-redraw, a page still loading, ...
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; last saw: {last!r}")
        time.sleep(every)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def stacklab_binary() -> Path:
    if os.environ.get("STACKLAB_BIN"):
        return Path(os.environ["STACKLAB_BIN"])
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache" / "stacklab-target")
    return Path(target) / "debug" / "stacklab"


def free_edge_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (the edge serves HTTP/3 on the same one)."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
        finally:
            t.close()
            u.close()
    raise RuntimeError("no port free for both TCP and UDP on 127.0.0.1")


def free_tcp_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Stacklab:
    """One `stacklab up` with its own data dir, ports and log; stopped with SIGTERM."""

    def __init__(self, workdir: Path, instances: int = 2, config: dict[str, str] | None = None):
        self.dir = workdir
        self.instances = instances
        # Keys of config/stacklab.toml set to other values (TOML text), e.g.
        # {"runtimes_dir": '"/tmp/x"'}: each must be a `key = ...` line there.
        self.config = config or {}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.admin_port = 0
        self.log_path = workdir / "stacklab.log"
        self._stdout_lines: list[str] = []
        self._stopping = False

    # -- life --

    def start(self, timeout: float = 60.0) -> "Stacklab":
        binary = stacklab_binary()
        if not binary.is_file():
            raise Missing(f"{binary} does not exist: build it with `cargo build -p stacklab` "
                          "(or set STACKLAB_BIN)")
        self.port = free_edge_port()
        http_port, self.admin_port = free_tcp_ports(2)
        data = self.dir / "data"
        config = self.dir / "stacklab.toml"
        text = (REPO / "config" / "stacklab.toml").read_text()
        if os.environ.get("STACKLAB_E2E_EMBEDDED") != "1":
            # The UI as it is in the work tree, not the copy built into the binary.
            text, n = re.subn(r'(?m)^static_dir = ".*"$', f"static_dir = {json.dumps(str(WEB))}", text)
            assert n == 1, "config/stacklab.toml has no `static_dir = ...` line to set"
        for key, value in self.config.items():
            text, n = re.subn(rf"(?m)^{re.escape(key)} = .*$", lambda _: f"{key} = {value}", text)
            assert n == 1, f"config/stacklab.toml has no single `{key} = ...` line to set"
        config.write_text(text)
        # None of the caller's stacklab settings, but where the Python runtime's virtualenv is.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STACKLAB_") or k == "STACKLAB_PYTHON_VENV"}
        env.update(
            STACKLAB_EDGE_ADDR=f"127.0.0.1:{self.port}",
            STACKLAB_HTTP_ADDR=f"127.0.0.1:{http_port}",
            STACKLAB_ADMIN_ADDR=f"127.0.0.1:{self.admin_port}",
            STACKLAB_DATA_DIR=str(data),
            STACKLAB_BACKEND_INSTANCES=str(self.instances),
            STACKLAB_LOG=os.environ.get("STACKLAB_E2E_LOG", "info"),
            NO_COLOR="1",
        )
        self._log = open(self.log_path, "ab")
        # Its own process group, so that whatever it leaves behind can be found and ended.
        # From the repository, as a person runs it: control finds the runtimes other than the
        # built-in Rust one under `runtimes_dir` ("backends", relative to the working
        # directory), e.g. backends/python/runtime.toml.
        self.proc = subprocess.Popen(
            [str(binary), "up", "--config", str(config)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._log, start_new_session=True,
        )
        up = threading.Event()
        ended = threading.Event()

        def pump():
            # Log lines may come first on stdout; the line that matters says "stacklab is up".
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace")
                self._stdout_lines.append(line)
                self._log.write(b"[stdout] " + raw)
                self._log.flush()
                m = UP_LINE.match(line)
                if m and not up.is_set():
                    self._up_port = int(m.group(1))
                    up.set()
            ended.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not up.wait(0.05):
            if ended.is_set() or time.monotonic() > deadline:
                self.stop()
                why = "exited" if ended.is_set() else f"did not say it was up within {timeout:.0f} s"
                raise RuntimeError(f"`stacklab up` {why}\n{self.log_tail()}")
        assert self._up_port == self.port, (self._up_port, self.port)
        return self

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then (only if it hangs) SIGKILL to its process group. Returns its exit code."""
        if not self.proc:
            return None
        self._stopping = True
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                code = self.proc.wait(5)
                self._log.write(b"[e2e] did not stop within 20 s of SIGTERM; killed\n")
        # Backend instances it started must be gone with it.
        deadline = time.monotonic() + 10
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._group_alive():
            self._log.write(b"[e2e] processes of its group outlived it; killed\n")
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        return code

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        # Zombies answer kill 0 too: look at what is really running.
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid and fields[0] != "Z":
                return True
        return False

    def died(self) -> str:
        """Says so when `stacklab up` stopped on its own (or was stopped by someone else)."""
        if self.proc and self.proc.poll() is not None and not self._stopping:
            return (f"\n`stacklab up` is no longer running (exit code {self.proc.returncode}); "
                    "the test did not stop it")
        return ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "--- stacklab log (last lines) ---\n" + "\n".join(text[-lines:])

    # -- what a test needs to know --

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/"

    @property
    def cert(self) -> Path:
        return self.dir / "data" / "tls" / "self-signed.crt"

    @property
    def token(self) -> str:
        return (self.dir / "data" / "admin.token").read_text().strip()

    def spki_hash(self) -> str:
        """base64(sha256(SubjectPublicKeyInfo)) of the edge's certificate, for Chromium's
        --ignore-certificate-errors-spki-list."""
        pub = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-pubkey", "-noout"],
                             check=True, capture_output=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                             check=True, capture_output=True).stdout
        return base64.b64encode(hashlib.sha256(der).digest()).decode()

    def admin(self, method: str, path: str, body=None):
        """The admin API with the bearer token: (status, parsed JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}{path}", method=method, data=data,
            headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"})
        return _send(req)

    def public(self, method: str, path: str):
        """The public API over HTTPS, trusting exactly the edge's own certificate."""
        ctx = ssl.create_default_context(cafile=str(self.cert))
        req = urllib.request.Request(f"https://localhost:{self.port}{path}", method=method)
        return _send(req, context=ctx)


def _send(req, **kw):
    try:
        with urllib.request.urlopen(req, timeout=10, **kw) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


# --------------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------------


def _find(env: str, candidates: list[str]) -> str:
    if os.environ.get(env):
        return os.environ[env]
    for c in candidates:
        p = shutil.which(c) if "/" not in c else (c if os.access(c, os.X_OK) else None)
        if p:
            return p
    raise Missing(f"{candidates[-1]} not found (install Debian's chromium and chromium-driver, "
                  f"or set {env})")


def chromium_paths() -> tuple[str, str]:
    # The real binary rather than Debian's /usr/bin/chromium shell wrapper.
    browser = _find("CHROMIUM", ["/usr/lib/chromium/chromium", "chromium", "chromium-browser"])
    driver = _find("CHROMEDRIVER", ["/usr/lib/chromium/chromedriver", "chromedriver"])
    return browser, driver


class Browser:
    """A headless Chromium for one test, trusting the edge's certificate by its SPKI hash."""

    def __init__(self, server: Stacklab, profile: Path, quic: bool = False):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser, driver = chromium_paths()
        o = webdriver.ChromeOptions()
        o.binary_location = browser
        args = [
            "--no-sandbox",  # root in a container has no user namespaces for the sandbox
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            f"--user-data-dir={profile}",
            f"--ignore-certificate-errors-spki-list={server.spki_hash()}",
            # localhost is 127.0.0.1 (where the edge listens; Chromium tries ::1 first for
            # QUIC and never falls back), and no other name resolves: the tests talk to
            # nothing but this machine.
            "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            "--password-store=basic",
        ]
        if os.environ.get("STACKLAB_E2E_HEADFUL") != "1":
            args.append("--headless=new")
        if quic:
            args += ["--enable-quic", f"--origin-to-force-quic-on=localhost:{server.port}"]
        else:
            # Alt-Svc would otherwise move the page to HTTP/3 whenever Chromium felt like it.
            args.append("--disable-quic")
        for a in args:
            o.add_argument(a)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must download nothing
        self.driver = webdriver.Chrome(options=o, service=Service(driver))
        self.server = server

    def quit(self):
        self.driver.quit()

    # -- reading the page --

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def phase(self) -> str:
        return self.js("return document.body.dataset.phase")

    def text(self, css: str) -> str:
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return e ? e.textContent : null", css)

    def attr(self, css: str, name: str):
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return e ? e.getAttribute(arguments[1]) : null", css, name)

    def count(self, css: str) -> int:
        return self.js("return document.querySelectorAll(arguments[0]).length", css)

    def each(self, css: str, expr: str) -> list:
        """`expr` (JavaScript, about the element `e`) for every element `css` matches."""
        return self.js(f"return [...document.querySelectorAll(arguments[0])].map((e) => ({expr}))", css)

    def visible(self, css: str) -> bool:
        return bool(self.js("""
            const e = document.querySelector(arguments[0]);
            return !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden'
        """, css))

    def el(self, css: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css)

    # -- acting as a person would: real clicks and keystrokes --

    def click(self, css: str):
        """A real click on what `css` finds once it is shown and enabled. An element the page
        replaced between finding and clicking is found again (never a click swallowed
        silently: a page that keeps replacing it makes this time out)."""
        from selenium.common.exceptions import StaleElementReferenceException

        def attempt():
            if not self.js("""
                const e = document.querySelector(arguments[0]);
                return !!e && !e.disabled && e.getClientRects().length > 0""", css):
                return False
            try:
                e = self.el(css)
                self.js("arguments[0].scrollIntoView({block: 'center'})", e)
                e.click()
                return True
            except StaleElementReferenceException:
                return False

        wait_for(attempt, f"{css} to be shown, enabled and clicked")

    def choose(self, field: str, value: str):
        """Picks a launcher option by clicking its label."""
        self.click(f'label[for="opt-{field}-{value}"]')
        wait_for(lambda: self.js("return document.getElementById(arguments[0]).checked",
                                 f"opt-{field}-{value}"), f"option {field}={value} to be checked")

    def fill(self, css: str, value: str):
        e = self.el(css)
        self.js("arguments[0].scrollIntoView({block: 'center'})", e)
        e.clear()
        if value:
            e.send_keys(value)

    def wait(self, cond, what: str, timeout: float = 10.0, show=None):
        """wait_for on the page; on timeout also says what `show()` returns and what the
        browser's console said."""
        try:
            return wait_for(cond, what, timeout)
        except AssertionError as e:
            state = ""
            if show:
                try:
                    state = f"\npage state: {show()!r}"
                except Exception as ee:
                    state = f"\npage state unreadable: {ee}"
            died = self.server.died()
            raise AssertionError(f"{e}{state}{died}\n{self.console_log()}") from None

    def console_log(self) -> str:
        try:
            entries = self.driver.get_log("browser")
        except Exception:
            return ""
        lines = [f"  {e['level']}: {e['message']}" for e in entries]
        return "--- browser console ---\n" + "\n".join(lines[-30:]) if lines else ""

    # -- screenshots --

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the window), as a person scrolling would see it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.js("window.scrollTo(0, 0)")  # sticky parts then sit where a person first sees them
        m = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = m.get("cssContentSize") or m["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
