"""The web UI in real headless Chromium against a real `stacklab up`, asserting on what the
page shows. The page is driven through the ids listed at the top of web/app.js; what each
test asserts is summed up in web/e2e/README.md."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from harness import REPO, Browser, Stacklab

MS = re.compile(r"^(\d+(\.\d+)? ms|<0\.01 ms|\d+\.\d\d s)$")
PARTS = ["proxy", "backend", "cache", "db"]
RUST_POOL = 'section[data-testid=pool][data-pool="rust"]'


def pool_css(pool: str) -> str:
    return f'section[data-testid=pool][data-pool="{pool}"]'

# --------------------------------------------------------------------------------------------
# Steps a person takes, shared by the tests
# --------------------------------------------------------------------------------------------


def open_page(b: Browser, server: Stacklab):
    b.driver.get(server.url)
    b.wait(lambda: b.phase() == "choosing", "the launcher (phase choosing)")
    b.wait(lambda: b.count("#choices fieldset.choice") >= 9, "every choice to render")


def launch(b: Browser, **choices) -> str:
    """Picks the given choices, presses Launch, waits for the lab; returns the session code."""
    for field, value in choices.items():
        b.choose(field, value)
    b.click("#launch")
    b.wait(lambda: b.phase() == "ready", "the lab (phase ready) after Launch", timeout=30)
    b.wait(lambda: b.attr("#session-code", "title"), "the session code in the header")
    check_stack(b, choices)
    return b.attr("#session-code", "title").removeprefix("Session ")


def check_stack(b: Browser, choices: dict):
    for field, value in choices.items():
        assert b.attr(f'#stack-fields dd[data-field="{field}"]', "data-value") == value, field


def tab(b: Browser, name: str):
    b.click(f"#tab-{name}")
    b.wait(lambda: b.attr(f"#tab-{name}", "aria-selected") == "true" and b.visible(f"#{name}"),
           f"the {name} view")


# The console's last exchange as the page shows it (null while it is the one marked as seen).
EXCHANGE_JS = """
const a = document.querySelector('#exchange-body > article[data-testid=exchange]');
if (!a || a.dataset.e2eSeen) return null;
const q = (t) => a.querySelector(`[data-testid=${t}]`);
const text = (t) => q(t)?.textContent ?? null;
const bar = q('exchange-timing');
return {
  action: a.dataset.action, status: Number(a.dataset.status), cache: a.dataset.cache,
  request: text('exchange-request'), response: text('exchange-response'),
  stored: text('exchange-stored-password'), outcome: text('cache-outcome'),
  protocol: text('exchange-protocol'), error: text('exchange-error'),
  member: [...a.querySelectorAll('.badge')].map((x) => x.textContent)
    .find((t) => t.startsWith('answered by '))?.slice(12) ?? null,
  runtime: q('exchange-runtime') && { value: q('exchange-runtime').dataset.runtime, label: text('exchange-runtime') },
  timing: bar && {
    total: Number(bar.dataset.total),
    parts: [...bar.querySelectorAll('[data-part]')].map((s) => ({
      part: s.dataset.part, ms: Number(s.dataset.ms), pct: parseFloat(s.style.width) })),
  },
};
"""


def exchange(b: Browser, action: str) -> dict:
    """Waits for the console to show the answer of `action`; every one is also kept in
    `b.exchanges` (what answered each, for the runtime checks)."""
    x = b.wait(lambda: (x := b.js(EXCHANGE_JS)) and x["action"] == action and x,
               f"the console to show the answer of {action!r}", timeout=15)
    b.__dict__.setdefault("exchanges", []).append(x)
    return x


def act(b: Browser, button: str, action: str) -> dict:
    """Clicks a console button and returns the exchange the page then shows for `action`."""
    b.js("const a = document.querySelector('#exchange-body > article');"
         "if (a) a.dataset.e2eSeen = '1'")
    b.click(button)
    return exchange(b, action)


def check_exchange(x: dict, *, status: int, cache: str | None = None):
    assert x["status"] == status and x["error"] is None, x
    if cache:
        assert x["cache"] == cache and x["outcome"] == f"cache {cache}", x
    # The Server-Timing bar: proxy, backend, cache and database parts that add up to the whole.
    t = x["timing"]
    assert t is not None, f"no Server-Timing bar: {x}"
    assert [p["part"] for p in t["parts"]] == PARTS, t
    assert t["total"] > 0 and t["parts"][0]["ms"] > 0, t
    assert abs(sum(p["pct"] for p in t["parts"]) - 100) < 0.5, t


def add_user(b: Browser, name: str, password: str, full_name: str = "") -> dict:
    b.fill("#new-username", name)
    b.fill("#new-email", f"{name}@example.com")
    b.fill("#new-password", password)
    b.fill("#new-full-name", full_name)
    return act(b, "#add-user", "create")


def rows(b: Browser) -> list[dict]:
    return b.each("#users-table tr[data-testid=user-row]", """{
        id: e.dataset.userId, username: e.cells[1].textContent, email: e.cells[2].textContent,
        full_name: e.cells[3].textContent, stored: e.cells[4].textContent }""")


def selected_id(b: Browser) -> str:
    return b.js("return document.getElementById('user-id').value")


def console_round(b: Browser, protocol: str, stored_ok, tag: str) -> None:
    """Add user, search, get (miss, then hit), update, verify password, delete: each action's
    request, answer, stored_password, cache outcome and Server-Timing as the page shows them."""
    created = 201 if protocol == "rest" else 200
    assert b.attr("#console", "data-protocol") == protocol
    # Opening the console lists the users once.
    exchange(b, "search")
    b.wait(lambda: b.text("#users-summary") == "0 users.", "an empty table")

    users = {}
    for name, password, full in [(f"ada{tag}", "correct horse battery", "Ada Lovelace"),
                                 (f"bob{tag}", "hunter2-hunter2", "")]:
        x = add_user(b, name, password, full)
        check_exchange(x, status=created, cache="bypass")
        if protocol == "rest":
            assert x["request"].startswith("POST /api/users"), x
        else:
            assert x["request"].startswith("POST /graphql"), x
            assert "mutation CreateUser" in x["request"], x
        # What was typed is masked in what is shown; what the database holds is shown as is.
        assert password not in x["request"], x["request"]
        assert stored_ok(x["stored"], password), x["stored"]
        assert b.text("#add-result").startswith(f"Add user: {created} · cache bypass"), \
            b.text("#add-result")
        users[name] = (selected_id(b), password)
        row = next(r for r in rows(b) if r["id"] == users[name][0])
        assert row["username"] == name and row["stored"] == x["stored"], row

    # Search: only the matching user.
    b.fill("#search-q", f"ada{tag}")
    check_exchange(act(b, "#search", "search"), status=200)
    b.wait(lambda: [r["username"] for r in rows(b)] == [f"ada{tag}"], "the search to list ada")
    assert b.text("#users-summary") == "1 user."

    # Open ada: a cache miss, then a hit (cache-aside: a write does not fill the cache).
    ada_id, ada_pw = users[f"ada{tag}"]
    x = act(b, f'#users-table tr[data-user-id="{ada_id}"] button', "get")
    check_exchange(x, status=200, cache="miss")
    assert b.js("return document.getElementById('edit-username').value") == f"ada{tag}"
    x = act(b, "#get-user", "get")
    check_exchange(x, status=200, cache="hit")
    assert x["timing"]["parts"][3]["ms"] == 0, f"a cache hit asked the database: {x}"

    # Update.
    b.fill("#edit-full-name", "Ada King, Countess of Lovelace")
    check_exchange(act(b, "#update-user", "update"), status=200)
    b.wait(lambda: any(r["full_name"] == "Ada King, Countess of Lovelace" for r in rows(b)),
           "the table to show the new full name")

    # Verify the password: right, then wrong.
    b.fill("#verify-password-input", ada_pw)
    act(b, "#verify-password", "verify")
    b.wait(lambda: b.attr("#verify-result", "data-ok") == "true", "the password to match")
    assert "matches" in b.text("#verify-result")
    b.fill("#verify-password-input", ada_pw + "!")
    act(b, "#verify-password", "verify")
    b.wait(lambda: b.attr("#verify-result", "data-ok") == "false", "a wrong one not to match")

    # Delete bob: list everyone, open bob, Delete.
    b.fill("#search-q", "")
    act(b, "#search", "search")
    b.wait(lambda: len(rows(b)) == 2, "both users listed")
    bob_id, _ = users[f"bob{tag}"]
    act(b, f'#users-table tr[data-user-id="{bob_id}"] button', "get")
    assert selected_id(b) == bob_id
    x = act(b, "#delete-user", "delete")
    assert x["status"] in (200, 204) and x["error"] is None, x
    b.wait(lambda: [r["username"] for r in rows(b)] == [f"ada{tag}"], "bob gone from the table")


def bcrypt_stored(stored, password):
    return bool(re.match(r"^\$2[aby]\$\d\d\$.{53}$", stored or "")) and password not in stored


def plaintext_stored(stored, password):
    return stored == password


def inspector_rows(b: Browser) -> list[dict]:
    return [r for r in b.each("#inspector-list li[data-testid=inspector-row]", """{
        key: e.dataset.key, protocol: e.dataset.protocol, status: e.dataset.status,
        title: e.querySelector('button').title, hidden: e.hidden }""") if not r["hidden"]]


def check_inspector(b: Browser, protocol: str, password: str):
    """Captured requests listed with the negotiated protocol; the first Add user selected
    shows its headers, its body (password masked) and a timing bar."""
    create = "POST /api/users" if b.attr("#console", "data-protocol") == "rest" else "POST /graphql"
    tab(b, "inspector")
    b.wait(lambda: any(r["title"] == create for r in inspector_rows(b))
           and any(r["title"].startswith("GET /api/users/") for r in inspector_rows(b)),
           "the console's requests in the inspector", timeout=15)
    seen = inspector_rows(b)
    assert all(r["protocol"] == protocol for r in seen), seen
    post = [r for r in seen if r["title"] == create][-1]  # newest first: the last is the first
    assert post["status"] in ("200", "201"), seen
    b.click(f'#inspector-list li[data-key="{post["key"]}"] button')
    detail = "#inspector-detail"
    b.wait(lambda: b.count(f"{detail} [data-testid=inspector-timing]") == 1, "the request's detail")
    assert f"over {protocol}" in b.text(detail)
    headers = b.each(f"{detail} [data-testid=inspector-headers] tbody tr",
                     "[e.cells[0].textContent, e.cells[1].textContent]")
    assert ["cookie", "[redacted]"] in headers, headers
    assert any(name == "content-type" and "json" in value for name, value in headers), headers
    body = b.text(f"{detail} [data-testid=inspector-body]")
    assert body and "username" in body and password not in body, body
    assert b.each(f"{detail} [data-testid=inspector-timing] [data-part]", "e.dataset.part") == PARTS


def check_cache_view(b: Browser):
    """Cache: the read user is there, hits counted; the policy switches lru → lfu."""
    tab(b, "cache")
    items = "#cache-items tr[data-testid=cache-item]"
    b.wait(lambda: b.count(items) >= 1, "cache items after the reads")
    assert b.text("#cache-engine") == "memory" and b.text("#cache-policy") == "lru"
    assert any(k.startswith("user:") for k in b.each(items, "e.dataset.key"))
    assert int(b.text('#cache-stats dd[data-stat="hits"]')) >= 1
    policy = '#cache-policies button[data-policy="{}"]'.format
    assert b.attr(policy("lru"), "aria-pressed") == "true"
    b.click(policy("lfu"))
    b.wait(lambda: b.attr(policy("lfu"), "aria-pressed") == "true"
           and b.text("#cache-policy") == "lfu", "the policy to become lfu")
    assert b.attr(policy("lru"), "aria-pressed") == "false"
    assert "LFU" in b.text("#cache-policy-note")


def run_analysis(b: Browser):
    """Analysis: the overview (1 user), then a benchmark: its table, chart and hashing bars."""
    tab(b, "analysis")
    b.wait(lambda: b.text('#analysis-overview [data-testid="db-rows"]') == "1",
           "the database's rows (1 user)")
    b.fill("#bench-reads", "50")
    b.fill("#bench-writes", "50")
    b.click("#run-benchmark")
    b.wait(lambda: b.visible("#benchmark-result") and b.count("#latency-chart svg polyline") == 3,
           "the benchmark's chart", timeout=60)
    assert b.count("#benchmark-table tbody tr") == 3
    modes = b.each("#hashing-chart li[data-mode]", "e.dataset.mode")
    assert {"plaintext", "sha256", "bcrypt", "argon2id"} <= set(modes), modes
    assert b.text("#benchmark-status").startswith("Done in")


# --------------------------------------------------------------------------------------------
# 1. The whole journey
# --------------------------------------------------------------------------------------------


def test_journey(server, open_browser, shot):
    b = open_browser()
    open_page(b, server)
    assert b.text("#page-protocol") == "h2"

    # The choices come from /api/options; what this install cannot offer is disabled, with the
    # server's reason.
    status, options = server.public("GET", "/api/options")
    assert status == 200
    for choice in options["choices"]:
        for o in choice["options"]:
            box = f'opt-{choice["field"]}-{o["value"]}'
            if choice["field"] == "cache_policy" and "memory" not in o.get("caches", []):
                continue  # only the chosen cache's policies are shown
            assert b.js("return !!document.getElementById(arguments[0])", box), box
            if o["available"] is False:
                assert b.js("return document.getElementById(arguments[0]).disabled", box), box
                assert b.text(f"#{box}-why") == f"Not available: {o['reason']}", box
    docker = next(o for c in options["choices"] if c["field"] == "provisioner"
                  for o in c["options"] if o["value"] == "docker")
    assert docker["available"] is False
    assert b.visible("#opt-provisioner-docker-why")
    assert docker["reason"] in b.text("#opt-provisioner-docker-why")
    shot(b, "launcher")

    # --- REST ---
    launch(b, protocol="rest", password_storage="bcrypt")
    # Transport "HTTPS" (the default): the page says the browser picks, and which it picked.
    note = b.text("[data-testid=transport-note]") or ""
    assert "You chose HTTPS" in note and "It picked TCP" in note, note
    steps = b.each("#steps li[data-testid=step]", """{
        name: e.dataset.name, status: e.dataset.status, ms: e.querySelector('.step-ms').textContent }""")
    assert steps, "no provisioning steps shown"
    for s in steps:
        assert s["status"] in ("done", "skipped") and MS.match(s["ms"]), s
    assert re.match(r"^\d+ steps, .+ in all$", b.text("#steps-total")), b.text("#steps-total")
    assert b.text("#session-provisioner") == "embedded"

    console_round(b, "rest", bcrypt_stored, "r")
    shot(b, "console-rest")

    check_cache_view(b)
    shot(b, "cache")

    check_inspector(b, "h2", "correct horse battery")
    shot(b, "inspector")

    run_analysis(b)
    shot(b, "analysis")

    # Topology: proxy → pools → instances → this session's database and cache.
    tab(b, "topology")
    b.wait(lambda: b.count(f'{RUST_POOL} li[data-testid=member][data-state="healthy"]') == 2,
           "two healthy rust instances")
    assert b.count("[data-testid=node-proxy]") == 1
    assert b.count('section[data-testid=pool][data-pool="control"]') == 1
    assert "your session" in b.text(RUST_POOL)
    assert "sqlite" in b.text("[data-testid=node-database]")
    assert "memory" in b.text("[data-testid=node-cache]")
    # The shared pool serves every session: nothing to kill or add there, only a drill of
    # the session's own to start.
    assert b.count("#topology-diagram button[id^=kill-rust-]") == 0 and b.count("#add-rust") == 0
    assert b.visible("#drill-start") and "Shared by every session" in b.text(RUST_POOL)
    # control's own member is not an instance control runs: nothing to kill or add there.
    assert b.count('section[data-testid=pool][data-pool="control"] button') == 0
    shot(b, "topology")

    # Report a bug: confirmed on the page, and kept by the server with the stack and requests.
    tab(b, "bugs")
    b.fill("#bug-title", "e2e: the cache forgot my user")
    b.fill("#bug-description", "Added ada, read her twice, switched to LFU.")
    b.click("#send-report")
    b.wait(lambda: b.attr("#bug-confirmation", "data-report-id"), "the report's confirmation")
    report_id = b.attr("#bug-confirmation", "data-report-id")
    assert b.text("#bug-confirmation").startswith(f"Thank you: report #{report_id} was filed")
    shot(b, "bugs")
    status, bugs = server.admin("GET", "/admin/bugs")
    assert status == 200, bugs
    bug = next(x for x in bugs["bugs"] if x["id"] == report_id)
    assert bug["title"] == "e2e: the cache forgot my user"
    assert bug["stack"]["protocol"] == "rest" and bug["requests"], bug

    # --- GraphQL: end the session, choose again ---
    first_code = b.attr("#session-code", "title")
    b.click("#end-session")
    b.wait(lambda: b.phase() == "choosing", "the launcher after End session")
    assert not b.js("return document.getElementById('expired-dialog').open"), \
        "ending the session on purpose opened the expired dialog"
    launch(b, protocol="graphql", password_storage="plaintext")
    assert b.attr("#session-code", "title") != first_code
    assert b.text("#console-protocol") == "GraphQL"
    assert b.attr("#tab-console", "aria-selected") == "true", "a new stack opens on its console"
    console_round(b, "graphql", plaintext_stored, "g")
    shot(b, "console-graphql")
    status, live = server.admin("GET", "/admin/control/sessions")
    assert status == 200 and live["live"] == 1, live

    # Every view above ran under the UI's Content-Security-Policy (no inline script or style,
    # never framed): the browser refused nothing.
    refused = [e["message"] for e in b.driver.get_log("browser")
               if "Content Security Policy" in e["message"]]
    assert not refused, refused


# --------------------------------------------------------------------------------------------
# 2. The same key steps with QUIC forced: the inspector shows h3
# --------------------------------------------------------------------------------------------


def test_quic(server, open_browser, shot):
    b = open_browser(quic=True)
    open_page(b, server)
    assert b.text("#page-protocol") == "h3", "the page itself did not come over HTTP/3"
    launch(b, transport="h3", protocol="rest")
    note = b.text("[data-testid=transport-note]") or ""
    assert "You chose HTTP/3" in note and "It picked HTTP/3" in note, note
    exchange(b, "search")
    x = add_user(b, "quinn", "over-udp-443")
    check_exchange(x, status=201, cache="bypass")
    assert x["protocol"] == "over h3", x
    x = act(b, "#get-user", "get")
    check_exchange(x, status=200, cache="miss")
    assert x["protocol"] == "over h3", x
    shot(b, "console")
    check_inspector(b, "h3", "over-udp-443")
    shot(b, "inspector")


# --------------------------------------------------------------------------------------------
# 3. The expired-session dialog
# --------------------------------------------------------------------------------------------


def session_id(code: str) -> str:
    """The id control and the admin API know a session by (types/src/session.rs)."""
    return hashlib.sha256(b"stacklab-resource:" + code.encode()).hexdigest()[:26]


def dialog_open(b: Browser) -> bool:
    return b.js("return document.getElementById('expired-dialog').open")


def end_server_side(b: Browser, server: Stacklab) -> str:
    """Ends the page's session with the admin API, as the reaper or an operator would."""
    status, live = server.admin("GET", "/admin/control/sessions")
    assert status == 200 and len(live["sessions"]) == 1, live
    sid = live["sessions"][0]["id"]
    code = b.attr("#session-code", "title").removeprefix("Session ")
    assert session_id(code) == sid, (code, sid)
    assert code.startswith(b.text("#session-code")[:6])
    status, _ = server.admin("DELETE", f"/admin/sessions/{sid}")
    assert status in (200, 204), status
    return code


def relaunch_and_check(b: Browser, server: Stacklab, old: str, choices: dict, user: str) -> str:
    """The dialog's "Start a new session": the same choices, a new session that works."""
    b.click("#expired-relaunch")
    b.wait(lambda: b.phase() == "ready", "a new session after relaunch", timeout=30)
    assert not dialog_open(b)
    code = b.attr("#session-code", "title").removeprefix("Session ")
    assert code != old
    check_stack(b, choices)
    exchange(b, "search")
    x = add_user(b, user, "still-here-1")
    check_exchange(x, status=200, cache="bypass")
    assert x["stored"] == "still-here-1"  # plaintext, as chosen
    status, live = server.admin("GET", "/admin/control/sessions")
    assert [s["id"] for s in live["sessions"]] == [session_id(code)], live
    return code


def test_expired_session(server, open_browser, shot):
    choices = {"protocol": "graphql", "password_storage": "plaintext", "cache_policy": "fifo"}
    b = open_browser()

    # 1. The person acts in the console after the session ended: the 410 opens the dialog.
    # The event stream would tell the page first (see 2.), so it is blocked here: the page
    # then polls, as it does wherever the stream cannot be had.
    b.driver.execute_cdp_cmd("Network.enable", {})
    b.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/session/events"]})
    open_page(b, server)
    launch(b, **choices)
    assert b.text("#live-state") == "polling"
    exchange(b, "search")
    code = end_server_side(b, server)
    assert not dialog_open(b), "the dialog opened before the person did anything"
    b.fill("#new-username", "late")
    b.fill("#new-email", "late@example.com")
    b.fill("#new-password", "still-here-1")
    b.click("#add-user")
    b.wait(lambda: dialog_open(b), "the expired dialog after Add user")
    answers = b.js("return performance.getEntriesByName(location.origin + '/graphql')"
                   ".map((e) => e.responseStatus)")
    assert answers[-1] == 410, answers
    assert b.phase() == "expired"
    assert b.text("#expired-title") == "Your session expired — start a new one?"
    shot(b, "dialog")
    code = relaunch_and_check(b, server, code, choices, "late")
    shot(b, "relaunched")

    # 2. With the event stream live, the page learns of the end at once, without acting.
    b.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    b.driver.get(server.url)
    b.wait(lambda: b.phase() == "ready" and b.text("#live-state") == "live", "the session, live")
    code = end_server_side(b, server)
    b.wait(lambda: dialog_open(b), "the expired dialog from the event stream")
    relaunch_and_check(b, server, code, choices, "later")


# --------------------------------------------------------------------------------------------
# 4. A failover drill from the topology view: no failed request
# --------------------------------------------------------------------------------------------


def members(b: Browser, pool: str = "rust") -> dict[str, str]:
    return dict(b.each(f"{pool_css(pool)} li[data-testid=member]",
                       "[e.dataset.member, e.dataset.state]"))


def counter(b: Browser, name: str) -> int:
    return int(b.text(f"#traffic-{name}").replace(",", ""))


def test_failover_drill(server, open_browser, shot):
    b = open_browser()
    open_page(b, server)
    launch(b, protocol="rest")
    assert add_user(b, "steady", "keeps-working")["member"]
    failover_drill(b, "rust", shot)


def drill_pool(b: Browser, runtime: str) -> str | None:
    """The name of the session's drill pool of `runtime` in the diagram, if there is one."""
    names = [n for n in b.each("section[data-testid=pool]", "e.dataset.pool")
             if n.startswith(f"{runtime}-drill-")]
    return names[0] if names else None


def start_drill(b: Browser, runtime: str) -> str:
    """Start a drill pool of the session's own and wait for its two healthy instances."""
    tab(b, "topology")
    b.wait(lambda: b.visible("#drill-start"), "the Start a drill button")
    b.click("#drill-start")
    b.wait(lambda: drill_pool(b, runtime), "the drill pool in the diagram", 20)
    pool = drill_pool(b, runtime)
    b.wait(lambda: list(members(b, pool).values()) == ["healthy", "healthy"],
           "two healthy drill instances", 20)
    assert "your session" in b.text(pool_css(pool))
    assert "your session" not in b.text(pool_css(runtime))
    assert b.text(f"{pool_css(pool)} [data-testid=drill-badge]") == "drill: started for you alone"
    # The shared pool still cannot be touched; the drill pool can.
    assert b.count(f"#topology-diagram button[id^=kill-{runtime}-]") \
        == b.count(f"#topology-diagram button[id^=kill-{pool}-]") == 2
    return pool


def end_drill(b: Browser, runtime: str):
    b.click("#drill-end")
    b.wait(lambda: drill_pool(b, runtime) is None, "the drill pool to go", 20)
    b.wait(lambda: "your session" in b.text(pool_css(runtime)), "the shared pool serving again")
    assert b.visible("#drill-start")


def failover_drill(b: Browser, runtime: str, shot):
    """Topology, under 20 requests a second: Start a drill (instances of the session's own),
    Kill instance on the one serving the session, 3 s more, Add instance (a new healthy member
    joins), 1 s more, Stop traffic: no request failed and every one sent was ok. Then End the
    drill: the shared pool serves the session again."""
    pool = start_drill(b, runtime)

    def now():  # the drill pool's members and their states, as the diagram shows them
        return members(b, pool)

    def state():  # what a timeout reports
        return {k: b.text(f"#{k}") for k in ["traffic-sent", "traffic-ok", "traffic-failed",
                "traffic-last-error", "traffic-status", "topology-status", "topology-error"]
                } | {"members": now()}

    def wait(cond, what, timeout=10.0):
        return b.wait(cond, what, timeout, show=state)

    before = now()
    pinned = b.each(f"{pool_css(pool)} li[data-testid=member][data-pinned=true]", "e.dataset.member")
    serving = pinned[0] if pinned else next(iter(before))

    b.click("#traffic-toggle")
    wait(lambda: counter(b, "ok") >= 20, "traffic flowing (20 ok)")
    shot(b, "traffic")

    # Kill the instance that serves this session.
    b.click(f"#kill-{pool}-{serving}")
    wait(lambda: now().get(serving, "gone") != "healthy", f"{serving} to leave the pool")
    sent = counter(b, "sent")
    wait(lambda: counter(b, "sent") >= sent + 60, "3 s of traffic after the kill")
    shot(b, "killed")

    # Add an instance: the pool is back to two healthy members.
    b.click(f"#add-{pool}")
    wait(lambda: [m for m, s in now().items() if s == "healthy" and m not in before]
         and list(now().values()).count("healthy") == 2, "a new healthy instance", 20)
    sent = counter(b, "sent")
    wait(lambda: counter(b, "sent") >= sent + 20, "1 s of traffic with the new instance")

    b.click("#traffic-toggle")
    wait(lambda: b.text("#traffic-status").startswith("Traffic stopped"), "the traffic to stop")
    shot(b, "after")
    ok, failed = counter(b, "ok"), counter(b, "failed")
    assert failed == 0, f"{failed} failed requests: {b.text('#traffic-last-error')}"
    assert ok > 0 and ok == counter(b, "sent"), (ok, counter(b, "sent"))
    end_drill(b, runtime)


# --------------------------------------------------------------------------------------------
# 5. Re-provision from the header (an embedded session: its SQLite file is made again, empty);
#    the topology says what each instance runs as
# --------------------------------------------------------------------------------------------


def reprovision_dialog_open(b: Browser) -> bool:
    return b.js("return document.getElementById('reprovision-dialog').open")


def test_reprovision(server, open_browser, shot):
    b = open_browser()
    open_page(b, server)
    code = launch(b, protocol="rest", password_storage="plaintext")
    exchange(b, "search")
    check_exchange(add_user(b, "before", "erase-me-please"), status=201, cache="bypass")
    b.wait(lambda: len(rows(b)) == 1, "the user in the table")
    assert b.visible("#session-reprovision") and not b.visible("#problem-banner")

    # It erases the data, so it asks first; Cancel leaves everything as it was.
    b.click("#session-reprovision")
    b.wait(lambda: reprovision_dialog_open(b), "the confirm dialog")
    assert "erased" in b.text("#reprovision-dialog-text")
    shot(b, "confirm")
    b.click("#reprovision-cancel")
    b.wait(lambda: not reprovision_dialog_open(b), "the dialog to close")
    assert b.js("return document.activeElement.id") == "session-reprovision"
    assert len(rows(b)) == 1 and not b.visible("#problem-banner")

    # Confirmed: the new run's steps, then the same session with an empty database.
    b.click("#session-reprovision")
    b.wait(lambda: reprovision_dialog_open(b), "the confirm dialog")
    b.click("#reprovision-confirm")
    b.wait(lambda: b.phase() == "ready" and b.visible("#reprovision-done"),
           "the re-provisioned note", timeout=30)
    assert not b.visible("#problem-banner")
    assert "start empty" in b.text("#reprovision-done-message")
    steps = b.each("#steps li[data-testid=step]", "[e.dataset.name, e.dataset.status]")
    assert ["remove SQLite file", "done"] in steps, steps
    assert all(status in ("done", "skipped") for _, status in steps), steps
    assert b.attr("#session-code", "title") == f"Session {code}", "a new session, not the same one"
    assert b.attr("#stack-panel", "data-state") == "ready"
    b.wait(lambda: b.text("#users-summary") == "0 users.", "the console read again: no users")
    shot(b, "done")
    x = add_user(b, "after", "fresh-start-1")
    check_exchange(x, status=201, cache="bypass")
    assert x["stored"] == "fresh-start-1"
    status, live = server.admin("GET", "/admin/control/sessions")
    assert [s["id"] for s in live["sessions"]] == [session_id(code)], live
    b.click("#reprovision-dismiss")
    b.wait(lambda: not b.visible("#reprovision-done"), "the note dismissed")

    # Topology: every instance says what it runs as; a container can be asked for only where
    # /api/options has Docker (not here), with the server's reason.
    tab(b, "topology")
    b.wait(lambda: b.count(f'{RUST_POOL} li[data-testid=member][data-state="healthy"]') == 2,
           "two healthy rust instances")
    assert b.each(f"{RUST_POOL} [data-testid=member-kind]", "e.dataset.kind") == ["process"] * 2
    assert all("process" in t for t in b.each(f"{RUST_POOL} [data-testid=member-kind]", "e.textContent"))
    assert b.each('section[data-pool="control"] [data-testid=member-kind]', "e.dataset.kind") \
        == ["external"]
    _, options = server.public("GET", "/api/options")
    docker = next(o for c in options["choices"] if c["field"] == "provisioner"
                  for o in c["options"] if o["value"] == "docker")
    assert docker["available"] is False
    drill = start_drill(b, "rust")
    assert b.js(f"return document.getElementById('add-{drill}-kind-process').checked")
    assert b.js(f"return document.getElementById('add-{drill}-kind-container').disabled")
    assert b.text(f"#add-{drill}-kind-container-why") == f"Not available: {docker['reason']}"
    shot(b, "topology")
    end_drill(b, "rust")


# --------------------------------------------------------------------------------------------
# 6. The same journey on the Python and on the Ruby runtime, chosen in the launcher; then one
#    Rust run of the same stack, compared with it
# --------------------------------------------------------------------------------------------

PYTHON = ("python", "Python (Flask)")


def answered_by(b: Browser, runtime: tuple[str, str], since: int = 0):
    """Every console answer since exchange `since` came from an instance of that runtime's
    pool, and the page named the runtime beside it."""
    pool, label = runtime
    seen = b.exchanges[since:]
    assert seen, "no exchanges"
    for x in seen:
        assert x["member"] and x["member"].startswith(f"{pool}-"), x
        assert x["runtime"] == {"value": pool, "label": label}, x


def runtime_journey(server, open_browser, shot, missing, rt: tuple[str, str], setup: str):
    """The journey on runtime `rt` (pool, label), chosen in the launcher; then one Rust run of
    the same stack, compared with it. `setup` says how to make the runtime ready."""
    name, label = rt
    b = open_browser()
    open_page(b, server)

    # Runtime offers every runtime the server found, each with its sentence; one that cannot
    # run here is disabled with the server's reason.
    status, options = server.public("GET", "/api/options")
    assert status == 200
    runtimes = next(c for c in options["choices"] if c["field"] == "runtime")["options"]
    assert {"rust", "python", "node", "ruby", name} <= {o["value"] for o in runtimes}, runtimes
    for o in runtimes:
        box = f'opt-runtime-{o["value"]}'
        assert b.text(f'label[for="{box}"]') == o["label"], o
        assert b.text(f"#{box}-desc") == o["description"] and o["description"], o
        assert b.js("return document.getElementById(arguments[0]).disabled", box) \
            == (o["available"] is False), o
        if o["available"] is False:
            assert b.text(f"#{box}-why") == f"Not available: {o['reason']}", o
    chosen = next(o for o in runtimes if o["value"] == name)
    assert chosen["label"] == label
    if chosen["available"] is False:
        missing(f"the {label} runtime cannot run here: {chosen['reason']} ({setup})")
    shot(b, "launcher")

    # --- REST on the runtime. Its pool starts with this first session of it: the `runtime` step.
    launch(b, runtime=name, protocol="rest", password_storage="bcrypt")
    assert b.text('#stack-fields dd[data-field="runtime"]') == label
    steps = dict(b.each("#steps li[data-testid=step]", "[e.dataset.name, e.dataset.status]"))
    assert steps.get("runtime") == "done", steps
    assert MS.match(b.text('#steps li[data-name="runtime"] .step-ms')), b.text("#steps")
    b.exchanges = []
    console_round(b, "rest", bcrypt_stored, "p")
    answered_by(b, rt)
    shot(b, "console-rest")

    check_cache_view(b)
    shot(b, "cache")

    check_inspector(b, "h2", "correct horse battery")
    detail = "#inspector-detail"
    assert b.text(f"{detail} [data-testid=inspector-member]").startswith(f"{name}-")
    assert b.text(f"{detail} [data-testid=inspector-runtime]") == label
    shot(b, "inspector")

    run_analysis(b)
    assert b.attr("#benchmark-runtime", "data-runtime") == name
    assert b.text("#benchmark-runtime").startswith(f"Ran on {label}, instance {name}-")
    assert b.each("#benchmark-runs-table tr[data-testid=bench-run]", "e.dataset.runtime") \
        == [name]
    shot(b, "analysis")

    # Topology: the session's pool is the runtime's, drawn first and labelled; Rust's is there too.
    tab(b, "topology")
    py = pool_css(name)
    b.wait(lambda: b.count(f'{py} li[data-testid=member][data-state="healthy"]') == 2,
           f"two healthy {name} instances")
    assert b.each("section[data-testid=pool]", "e.dataset.pool")[0] == name
    assert "your session" in b.text(py)
    assert b.text(f"{py} [data-testid=pool-runtime]") == label
    assert b.text(f'{pool_css("rust")} [data-testid=pool-runtime]') == "Rust (hyper)"
    assert "your session" not in b.text(pool_css("rust"))
    assert all(m.startswith(f"{name}-") for m in members(b, name)), members(b, name)
    assert b.count(f"#topology-diagram button[id^=kill-{name}-]") == 0 and b.visible("#drill-start")
    shot(b, "topology")

    # Kill the instance serving this session (in a drill pool of its own) under traffic:
    # nothing fails.
    failover_drill(b, name, shot)

    # --- GraphQL on the runtime: a second session, the same round.
    b.click("#end-session")
    b.wait(lambda: b.phase() == "choosing", "the launcher after End session")
    launch(b, runtime=name, protocol="graphql", password_storage="plaintext")
    assert b.text('#stack-fields dd[data-field="runtime"]') == label
    since = len(b.exchanges)
    console_round(b, "graphql", plaintext_stored, "q")
    answered_by(b, rt, since)
    shot(b, "console-graphql")
    # The inspector: a GraphQL request, answered by an instance of the runtime.
    tab(b, "inspector")
    b.wait(lambda: any(r["title"] == "POST /graphql" for r in inspector_rows(b)),
           "the GraphQL requests in the inspector", timeout=15)
    post = next(r for r in inspector_rows(b) if r["title"] == "POST /graphql")
    b.click(f'#inspector-list li[data-key="{post["key"]}"] button')
    b.wait(lambda: b.count("#inspector-detail [data-testid=inspector-timing]") == 1,
           "the request's detail")
    assert b.text("#inspector-detail [data-testid=inspector-member]").startswith(f"{name}-")
    assert b.text("#inspector-detail [data-testid=inspector-runtime]") == label
    shot(b, "inspector-graphql")

    # --- The same stack on Rust: its benchmark sits beside the runtime's, marked as compared.
    b.click("#end-session")
    b.wait(lambda: b.phase() == "choosing", "the launcher after End session")
    launch(b, runtime="rust", protocol="rest", password_storage="bcrypt")
    assert b.text('#stack-fields dd[data-field="runtime"]') == "Rust (hyper)"
    exchange(b, "search")
    since = len(b.exchanges)
    check_exchange(add_user(b, "ferris", "crab-claws-1"), status=201, cache="bypass")
    answered_by(b, ("rust", "Rust (hyper)"), since)
    run_analysis(b)
    assert b.attr("#benchmark-runtime", "data-runtime") == "rust"
    runs = b.each("#benchmark-runs-table tr[data-testid=bench-run]",
                  "[e.dataset.runtime, e.dataset.stack, e.classList.contains('compared')]")
    assert runs == [["rust", "sqlite|memory", True], [name, "sqlite|memory", True]], runs
    shot(b, "compare")


def test_python_runtime(server, open_browser, shot, missing):
    runtime_journey(server, open_browser, shot, missing, PYTHON, "backends/python/setup.sh makes its venv")


RUBY = ("ruby", "Ruby (Rails)")


def test_ruby_runtime(server, open_browser, shot, missing):
    runtime_journey(server, open_browser, shot, missing, RUBY,
                    "backends/ruby/setup.sh installs its Debian packages")


JAVA = ("java", "Java (Jetty)")


def test_java_runtime(server, open_browser, shot, missing):
    runtime_journey(server, open_browser, shot, missing, JAVA,
                    "backends/java/setup.sh installs its Debian packages and compiles it")


# --------------------------------------------------------------------------------------------
# 6b. The same journey on the Node runtime: REST and GraphQL answered by its own pool, the
#     cache view, the inspector, the benchmark, the topology and a failover drill
# --------------------------------------------------------------------------------------------

NODE = ("node", "Node.js (Express)")


def test_node_runtime(server, open_browser, shot, missing):
    b = open_browser()
    open_page(b, server)
    status, options = server.public("GET", "/api/options")
    assert status == 200
    runtimes = next(c for c in options["choices"] if c["field"] == "runtime")["options"]
    node = next((o for o in runtimes if o["value"] == "node"), None)
    assert node is not None, runtimes
    assert node["label"] == NODE[1]
    assert b.text('label[for="opt-runtime-node"]') == NODE[1]
    if node["available"] is False:
        missing(f"the Node runtime cannot run here: {node['reason']} "
                "(backends/node/setup.sh makes its modules)")

    # --- REST on Node, bcrypt: its pool starts with this first Node session.
    launch(b, runtime="node", protocol="rest", password_storage="bcrypt")
    assert b.text('#stack-fields dd[data-field="runtime"]') == NODE[1]
    steps = dict(b.each("#steps li[data-testid=step]", "[e.dataset.name, e.dataset.status]"))
    assert steps.get("runtime") == "done", steps
    b.exchanges = []
    console_round(b, "rest", bcrypt_stored, "p")
    answered_by(b, NODE)
    shot(b, "console-rest")

    check_cache_view(b)
    check_inspector(b, "h2", "correct horse battery")
    detail = "#inspector-detail"
    assert b.text(f"{detail} [data-testid=inspector-member]").startswith("node-")
    assert b.text(f"{detail} [data-testid=inspector-runtime]") == NODE[1]

    run_analysis(b)
    assert b.attr("#benchmark-runtime", "data-runtime") == "node"
    assert b.text("#benchmark-runtime").startswith(f"Ran on {NODE[1]}, instance node-")
    shot(b, "analysis")

    # Topology: the session's pool is Node's, drawn first; kill its instance under traffic.
    tab(b, "topology")
    pool = pool_css("node")
    b.wait(lambda: b.count(f'{pool} li[data-testid=member][data-state="healthy"]') == 2,
           "two healthy node instances")
    assert b.each("section[data-testid=pool]", "e.dataset.pool")[0] == "node"
    assert b.text(f"{pool} [data-testid=pool-runtime]") == NODE[1]
    assert all(m.startswith("node-") for m in members(b, "node")), members(b, "node")
    assert b.count("#topology-diagram button[id^=kill-node-]") == 0 and b.visible("#drill-start")
    shot(b, "topology")
    failover_drill(b, "node", shot)

    # --- GraphQL on Node, argon2id: a second session, the same round.
    b.click("#end-session")
    b.wait(lambda: b.phase() == "choosing", "the launcher after End session")
    launch(b, runtime="node", protocol="graphql", password_storage="plaintext")
    since = len(b.exchanges)
    console_round(b, "graphql", plaintext_stored, "q")
    answered_by(b, NODE, since)
    shot(b, "console-graphql")


# --------------------------------------------------------------------------------------------
# 7. A runtime this install cannot run: shown, disabled with its check's words, never chosen
# --------------------------------------------------------------------------------------------

FORTRAN_WHY = "gfortran is not installed: apt-get install gfortran"


def runtimes_with_fortran(tmp: Path) -> dict[str, str]:
    """A runtimes_dir with the repository's Python runtime and a Fortran one whose check fails
    (Rust is built into the binary)."""
    d = tmp / "runtimes"
    (d / "fortran").mkdir(parents=True)
    (d / "python").symlink_to(REPO / "backends" / "python")
    (d / "fortran" / "runtime.toml").write_text(
        'name = "fortran"\nlabel = "Fortran (fcgi)"\n'
        'description = "A Fortran service behind FastCGI."\n'
        f'check = ["sh", "-c", "echo \'{FORTRAN_WHY}\' >&2; exit 1"]\n'
        'start = ["./bin/none"]\n')
    return {"runtimes_dir": f'"{d}"'}


@pytest.mark.parametrize("server", [runtimes_with_fortran], indirect=True)
def test_runtime_unavailable(server, open_browser, shot):
    b = open_browser()
    # A person who chose Fortran before (the choices are remembered) gets the default back.
    b.driver.get(server.url)
    b.js("localStorage.setItem('stacklab.choices', JSON.stringify({runtime: 'fortran'}))")
    open_page(b, server)
    _, options = server.public("GET", "/api/options")
    fortran = next(o for c in options["choices"] if c["field"] == "runtime"
                   for o in c["options"] if o["value"] == "fortran")
    assert fortran["available"] is False and fortran["reason"].endswith(FORTRAN_WHY), fortran
    assert b.text('label[for="opt-runtime-fortran"]') == "Fortran (fcgi)"
    assert b.text("#opt-runtime-fortran-desc") == "A Fortran service behind FastCGI."
    assert b.js("return document.getElementById('opt-runtime-fortran').disabled")
    assert b.text("#opt-runtime-fortran-why") == f"Not available: {fortran['reason']}"
    assert b.js("return document.getElementById('opt-runtime-rust').checked")
    assert not b.js("return document.getElementById('opt-runtime-python').disabled")
    # A click on it changes nothing.
    b.el('label[for="opt-runtime-fortran"]').click()
    assert b.js("return document.getElementById('opt-runtime-rust').checked")
    assert "Rust (hyper)" in b.text("#launch-summary")
    shot(b, "launcher")
