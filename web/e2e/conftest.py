"""Fixtures: each test gets its own `stacklab up` (free ports, temp data dir, 2 backend
instances per runtime pool, run from the repository, stopped with SIGTERM at the end), a way
to open headless Chromium on it, and a `shot(view)` that keeps a screenshot under
target/ui-screenshots/<test>-<view>.png."""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import socket
import struct
from pathlib import Path

import pytest

from harness import REPO, Browser, Missing, Stacklab, chromium_paths

def _private_network() -> str:
    """Moves this test run (and so the servers and browsers it starts) into a network
    namespace of its own with only loopback, when it may (root). Chromium aborts requests in
    flight with ERR_NETWORK_CHANGED whenever an interface of the machine comes or goes (a Docker
    container starting does that), and in a namespace of its own it sees none of them; nothing
    there can reach past this machine either. STACKLAB_E2E_NETNS=0 turns it off."""
    if os.environ.get("STACKLAB_E2E_NETNS") == "0":
        return "the machine's (STACKLAB_E2E_NETNS=0)"
    if os.geteuid() != 0:
        return "the machine's (not root: no private namespace)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET, for this (still single) thread
        return f"the machine's (unshare: {os.strerror(ctypes.get_errno())})"
    # Loopback starts down in a new namespace: bring it up (SIOCGIFFLAGS, SIOCSIFFLAGS).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 0x1))  # IFF_UP
    return "a private namespace with loopback only"


NETWORK = _private_network()
SHOTS_DIR = Path(os.environ.get("STACKLAB_E2E_SCREENSHOTS") or REPO / "target" / "ui-screenshots")
REQUIRED = os.environ.get("STACKLAB_REQUIRE_SERVICES") == "1"
_shots: list[Path] = []


def _missing(why: str):
    if REQUIRED:
        pytest.fail(f"{why} (STACKLAB_REQUIRE_SERVICES=1: a missing tool is a failure)", pytrace=False)
    pytest.skip(f"{why}; skipping (set STACKLAB_REQUIRE_SERVICES=1 to make this a failure)")


@pytest.fixture
def missing():
    """missing(why): what a test does when something it needs cannot run here — skip saying
    why, or fail under STACKLAB_REQUIRE_SERVICES=1."""
    return _missing


@pytest.fixture
def server(tmp_path, request):
    """A `stacklab up` for the test. Parametrized indirectly with a function of the test's
    tmp_path, it runs with the config keys that function returns set (Stacklab's `config`)."""
    setup = getattr(request, "param", None)
    s = Stacklab(tmp_path, config=setup(tmp_path) if setup else None)
    try:
        s.start()
    except Missing as e:
        _missing(str(e))
    request.node.stacklab = s
    yield s
    died = s.died()
    code = s.stop()
    assert not died, f"{died}\n{s.log_tail()}"
    assert code == 0, f"`stacklab up` exited with {code} after SIGTERM\n{s.log_tail()}"


@pytest.fixture
def open_browser(server, tmp_path, request):
    try:
        chromium_paths()
    except Missing as e:
        _missing(str(e))
    opened: list[Browser] = []

    def open_(quic: bool = False) -> Browser:
        b = Browser(server, tmp_path / f"profile-{len(opened)}", quic=quic)
        opened.append(b)
        request.node.browsers = opened
        return b

    yield open_
    for b in opened:
        b.quit()


@pytest.fixture
def shot(request):
    """shot(browser, view): a whole-page screenshot kept as a test artifact."""
    test = re.sub(r"^test_", "", request.node.originalname)
    for old in SHOTS_DIR.glob(f"{test}-*.png"):
        old.unlink()  # a run's screenshots are that run's only

    def take(browser: Browser, view: str) -> Path:
        path = browser.screenshot(SHOTS_DIR / f"{test}-{view}.png")
        _shots.append(path)
        print(f"screenshot: {path}")
        return path

    return take


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call" and rep.failed:
        # What the page looked like, what the browser said, what the server logged.
        test = re.sub(r"^test_", "", item.originalname)
        for i, b in enumerate(getattr(item, "browsers", [])):
            try:
                path = b.screenshot(SHOTS_DIR / f"{test}-FAILED{i or ''}.png")
                _shots.append(path)
                rep.sections.append(("screenshot at failure", str(path)))
            except Exception as e:  # the browser may be gone
                rep.sections.append(("screenshot at failure", f"none: {e}"))
            rep.sections.append(("browser console", b.console_log()))
        s = getattr(item, "stacklab", None)
        if s:
            rep.sections.append(("stacklab log", s.died() + "\n" + s.log_tail(60)))
    return rep


def pytest_report_header(config):
    return f"stacklab e2e: network: {NETWORK}; screenshots in {SHOTS_DIR}"


def pytest_terminal_summary(terminalreporter):
    if _shots:
        terminalreporter.section("screenshots")
        for p in _shots:
            terminalreporter.write_line(str(p))
