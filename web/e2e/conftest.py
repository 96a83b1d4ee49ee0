"""Fixtures: each test gets its own `stacklab up` (free ports, temp data dir, 2 backend
instances, stopped with SIGTERM at the end), a way to open headless Chromium on it, and a
`shot(view)` that keeps a screenshot under target/ui-screenshots/<test>-<view>.png."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness import REPO, Browser, Missing, Stacklab, chromium_paths

SHOTS_DIR = Path(os.environ.get("STACKLAB_E2E_SCREENSHOTS") or REPO / "target" / "ui-screenshots")
REQUIRED = os.environ.get("STACKLAB_REQUIRE_SERVICES") == "1"
_shots: list[Path] = []


def _missing(why: str):
    if REQUIRED:
        pytest.fail(f"{why} (STACKLAB_REQUIRE_SERVICES=1: a missing tool is a failure)", pytrace=False)
    pytest.skip(f"{why}; skipping (set STACKLAB_REQUIRE_SERVICES=1 to make this a failure)")


@pytest.fixture
def server(tmp_path, request):
    s = Stacklab(tmp_path)
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
    test = re.sub(r"^test_", "", request.node.name)
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
        test = re.sub(r"^test_", "", item.name)
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


def pytest_terminal_summary(terminalreporter):
    if _shots:
        terminalreporter.section("screenshots")
        for p in _shots:
            terminalreporter.write_line(str(p))
