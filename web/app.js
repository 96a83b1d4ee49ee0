/*
 * stacklab web UI — entry module. No build step: the browser loads these ES modules as they are.
 *
 * Test hooks (stable ids; rows and parts also carry data-testid):
 *   body[data-phase]        loading | choosing | launching | provisioning | ready | failed | expired
 *   #status                 polite live region: what just happened, in words
 *   Launcher   #launcher, #choices-form, #choice-{field} (fieldset), radios #opt-{field}-{value}
 *              (e.g. #opt-database-postgres; disabled ones say why in #opt-{field}-{value}-why),
 *              #error-{field} (server error for that field), #launch-error, #launch (button "Launch")
 *   Header     #session-bar, #session-code, #session-countdown, #session-provisioner,
 *              #page-protocol, #session-reprovision (button "Re-provision", ready or broken
 *              sessions; opens #reprovision-dialog: #reprovision-confirm, #reprovision-cancel),
 *              #end-session (button "End session")
 *   Banner     #problem-banner[data-kind=broken|reprovisioning] (a broken session: role=alert
 *              #problem-alert with #problem-title and the server's #problem-message;
 *              #problem-error; buttons #reprovision "Re-provision", #problem-new-session
 *              "Start a new session", #problem-dismiss), #reprovision-done (after a
 *              re-provision: #reprovision-done-title, #reprovision-dismiss)
 *   Stack      #stack-panel[data-state], #session-state, #stack-fields, #steps (li[data-testid=step]
 *              [data-name][data-status]), #notes
 *   Tabs       #tab-console #tab-cache #tab-inspector #tab-analysis #tab-topology #tab-bugs;
 *              panels #console #cache #inspector #analysis #topology #bugs (also reachable as
 *              /#cache etc.)
 *   Console    #console[data-protocol], #add-user-form (#new-username #new-email #new-password
 *              #new-full-name, button #add-user "Add user"), #search-form (#search-q #search-limit
 *              #search-offset, button #search "Search"), #users-table (tr[data-testid=user-row]
 *              [data-user-id], "Open" buttons), #user-form (#user-id #edit-username #edit-email
 *              #edit-full-name #edit-password; buttons #get-user "Get user", #update-user "Update",
 *              #delete-user "Delete"; #verify-password-input, #verify-password "Verify password",
 *              #verify-result[data-ok]), #exchange (article[data-testid=exchange][data-action]
 *              [data-status][data-cache] with [data-testid=exchange-request|exchange-response|
 *              exchange-stored-password|exchange-timing|cache-outcome], and
 *              [data-testid=exchange-runtime][data-runtime] naming the runtime of the member that
 *              answered), #console-error
 *   Cache      #cache-engine, #cache-policy, #cache-policies (button[data-policy][aria-pressed]),
 *              #cache-policy-note, #cache-stats (dd[data-stat]), #cache-items
 *              (tr[data-testid=cache-item][data-key]), #cache-flush "Flush cache", #cache-refresh
 *   Inspector  #inspector-list (li[data-testid=inspector-row][data-protocol][data-status] > button),
 *              #inspector-detail ([data-testid=inspector-timing], [data-testid=inspector-headers],
 *              [data-testid=inspector-body], [data-testid=inspector-member],
 *              [data-testid=inspector-runtime][data-runtime])
 *   Analysis   #analysis-overview ([data-testid=db-size|db-rows|hit-ratio]), #benchmark-form
 *              (#bench-reads #bench-writes, #run-benchmark "Run benchmark"), #benchmark-runtime
 *              [data-runtime], #benchmark-table, #latency-chart (svg), #hashing-chart
 *              (li[data-mode]), #benchmark-runs (this page's runs across sessions:
 *              #benchmark-runs-table tr[data-testid=bench-run][data-runtime][data-stack], class
 *              "compared" when that stack was run on more than one runtime)
 *   Topology   #topology-diagram (section[data-testid=pool][data-pool], the session's first, a
 *              runtime's labelled [data-testid=pool-runtime][data-runtime];
 *              li[data-testid=member][data-member][data-state] with
 *              [data-testid=member-kind][data-kind=process|container|external]), buttons
 *              "Add instance" (#add-{pool}, the kind from radios #add-{pool}-kind-process and
 *              #add-{pool}-kind-container) and "Kill instance" (#kill-{pool}-{id}), #topology-status,
 *              #traffic-toggle ("Start traffic" / "Stop traffic"), #traffic-sent, #traffic-ok,
 *              #traffic-failed, #traffic-status
 *   Bugs       #bug-form (#bug-title #bug-description, #send-report "Send report"),
 *              #bug-confirmation[data-report-id]
 *   Expired    #expired-dialog (<dialog>), #expired-relaunch "Start a new session",
 *              #expired-dismiss "Choose again"
 */

import { request, onSessionGone, onUnavailable } from "./js/api.js";
import { byId, closeDialog } from "./js/dom.js";
import { openEvents } from "./js/events.js";
import { poller } from "./js/poll.js";
import { normalizeChoices, restoreSelection, launchBody } from "./js/lib/choices.js";
import { nextPhase, applySessionEvent, mergeSession } from "./js/lib/state.js";
import { createLauncher } from "./js/launcher.js";
import { renderHeader, renderCountdown, renderStackPanel, pageProtocol } from "./js/sessionview.js";
import { createConsole } from "./js/console.js";
import { createCacheView } from "./js/cacheview.js";
import { createInspector } from "./js/inspector.js";
import { createAnalysis } from "./js/analysis.js";
import { createTopology } from "./js/topology.js";
import { createBugs } from "./js/bugs.js";
import { createReprovisionView, REPROVISION_FAILED_TITLE } from "./js/reprovisionview.js";

const STORE_KEY = "stacklab.choices";
const TABS = ["console", "cache", "inspector", "analysis", "topology", "bugs"];
const DEFAULT_WINDOW_MS = 60 * 60 * 1000;

const app = {
  phase: "loading",
  choices: [],
  session: null,
  events: null,
  tab: TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "console",
  gone: false,
  // The person is ending the session: its own end (an `expired` event, a 410 on a request
  // still in flight) must not open "your session expired".
  ending: false,
  slidingMs: DEFAULT_WINDOW_MS,
};

// --- Announcements ---------------------------------------------------------------------------

let announceTimer = null;
function announce(msg) {
  const el = byId("status");
  clearTimeout(announceTimer);
  el.textContent = "";
  // A short pause so the same words said twice are read twice.
  announceTimer = setTimeout(() => {
    el.textContent = msg;
  }, 40);
}

// --- Remembered choices ----------------------------------------------------------------------

function remembered() {
  try {
    return localStorage.getItem(STORE_KEY);
  } catch {
    return null;
  }
}
function remember(selection) {
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(selection));
  } catch {
    // Private mode: the choices are just not kept.
  }
}

// --- Views -----------------------------------------------------------------------------------

const ctx = {
  request,
  announce,
  isLive: () => Boolean(app.events && app.events.live),
  session: () => app.session,
  protocol: () => (app.session?.stack?.protocol === "graphql" ? "graphql" : "rest"),
  onDataRequest: () => slideExpiry(),
  choices: () => app.choices,
};

const launcher = createLauncher({ onLaunch: launch, announce });
const views = {
  console: createConsole(ctx),
  cache: createCacheView(ctx),
  inspector: createInspector(ctx),
  analysis: createAnalysis(ctx),
  topology: createTopology(ctx),
  bugs: createBugs(ctx),
};
// The banner over the session, and re-provisioning it (the header's button and its dialog).
const reprov = createReprovisionView({
  request,
  announce,
  session: () => app.session,
  isGone: () => app.gone,
  adoptSession,
  refreshSession,
  renderSession,
  refreshViews,
  sessionGone,
  onNewSession: replaceSession,
  onDismiss: () => {
    if (app.phase === "ready") byId(`tab-${app.tab}`).focus();
  },
});

// --- Phases ----------------------------------------------------------------------------------

function go(event) {
  const before = app.phase;
  app.phase = nextPhase(app.phase, event);
  if (app.phase !== before) renderPhase(before);
}

function renderPhase(before) {
  const p = app.phase;
  document.body.dataset.phase = p;
  byId("loading").hidden = p !== "loading";
  byId("launcher").hidden = !(p === "choosing" || p === "launching" || p === "expired");
  byId("session-view").hidden = !(p === "provisioning" || p === "ready" || p === "failed");
  byId("lab").hidden = p !== "ready";
  if (p === "ready" && before !== "ready") selectTab(app.tab, { focus: false });
  if (before === "ready" && p !== "ready") views[app.tab].hide();
}

// --- Tabs ------------------------------------------------------------------------------------

function selectTab(name, { focus = false } = {}) {
  if (!TABS.includes(name)) return;
  const previous = app.tab;
  if (previous !== name) views[previous].hide();
  app.tab = name;
  for (const t of TABS) {
    const tab = byId(`tab-${t}`);
    const on = t === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
    byId(t).hidden = !on;
  }
  if (focus) byId(`tab-${name}`).focus();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (app.phase === "ready") views[name].show();
}

byId("tabs").addEventListener("click", (e) => {
  const tab = e.target.closest("[role=tab]");
  if (tab) selectTab(tab.dataset.tab);
});
byId("tabs").addEventListener("keydown", (e) => {
  const i = TABS.indexOf(app.tab);
  const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[e.key];
  if (to === undefined) return;
  e.preventDefault();
  selectTab(TABS[(to + TABS.length) % TABS.length], { focus: true });
});
window.addEventListener("hashchange", () => {
  const name = location.hash.slice(1);
  if (TABS.includes(name) && name !== app.tab) selectTab(name);
});

// --- Session life ----------------------------------------------------------------------------

const countdown = { timer: null, checking: false };
const refresher = poller(refreshSession, 60000);
// While provisioning (or re-provisioning) without a live stream, the session is polled every second.
const provisioningPoll = poller(refreshSession, 1000, {
  when: () => (app.phase === "provisioning" || reprov.busy) && !ctx.isLive(),
});

function enterSession(session, how) {
  app.session = session;
  app.gone = false;
  reprov.reset();
  // The idle window: how far a data request pushes the expiry (an hour by default).
  const span = session.expires_at - (session.last_used_at ?? session.created_at);
  app.slidingMs = Number.isFinite(span) && span > 0 ? span : DEFAULT_WINDOW_MS;
  for (const v of Object.values(views)) v.reset(session);
  // A new stack opens on its console; a page reloaded on a session keeps the view in its URL.
  if (how === "launched") app.tab = "console";
  renderHeader(session);
  renderSession();
  startLive();
  go({ type: how, state: session.state });
  if (session.state === "failed") announce("Setting up the stack failed; see the steps.");
  else if (session.state === "ready") announce("Your stack is ready.");
  else if (session.state !== "broken") announce("Setting up your stack…");
  // A broken session says so through its banner (role=alert).
}

/** The stack panel and the banner, from app.session. */
function renderSession() {
  if (app.session) renderStackPanel(app.session, app.choices);
  reprov.render();
}

/** The session as the server now has it (a re-provision's answer): the header and phase follow. */
function adoptSession(session) {
  app.session = session;
  renderHeader(app.session);
  go({ type: "state", state: app.session.state });
}

/** Every view emptied and, for the one in sight, read again (after a re-provision). */
function refreshViews() {
  for (const v of Object.values(views)) {
    v.stop();
    v.reset(app.session);
  }
  if (app.phase === "ready") views[app.tab].show();
}

function startLive() {
  stopLive();
  app.events = openEvents({
    onEvent,
    onLive: (live) => {
      byId("live-state").textContent = live ? "live" : "polling";
      byId("live-state").dataset.live = String(live);
    },
    onRefused: () => refreshSession(),
  });
  clearInterval(countdown.timer);
  countdown.timer = setInterval(tickCountdown, 1000);
  refresher.start({ now: false });
  provisioningPoll.start({ now: false });
}

function stopLive() {
  app.events?.close();
  app.events = null;
  clearInterval(countdown.timer);
  countdown.timer = null;
  refresher.stop();
  provisioningPoll.stop();
  for (const v of Object.values(views)) v.stop();
}

function onEvent(name, data) {
  switch (name) {
    case "step":
    case "state":
    case "lost": {
      if (!app.session) return;
      const before = app.session;
      app.session = applySessionEvent(app.session, name, data);
      const changed = app.session.state !== before.state;
      // A `state: broken` comes just before the `lost` that says why: the banner waits for
      // those words (or for the session's answer, which has them) so it is read out once.
      if (changed) reprov.awaitWords(app.session.state === "broken" && !app.session.problem);
      renderSession();
      if (changed) {
        go({ type: "state", state: app.session.state });
        // The whole session: every step, and the expiry as the server has it.
        refreshSession().finally(() => reprov.wordsCame());
        if (app.session.state === "ready" && !before.reprovisioning) announce("Your stack is ready.");
        if (app.session.state === "failed") announce("Setting up the stack failed; see the steps.");
        reprov.stateChanged(before);
      }
      break;
    }
    case "request":
      views.inspector.onEvent(data);
      break;
    case "cache":
      views.cache.onEvent(data);
      break;
    case "expired":
      sessionGone({ code: "session_expired" });
      break;
    default:
  }
}

async function refreshSession() {
  if (!app.session) return;
  const answer = await request("GET", "/api/session");
  if (answer.error || !answer.data || !app.session) return; // a gone session opens the dialog through api.js
  const before = app.session;
  app.session = mergeSession(app.session, answer.data);
  renderHeader(app.session);
  renderSession();
  if (app.session.state !== before.state) {
    go({ type: "state", state: app.session.state });
    reprov.stateChanged(before);
  }
}

// A data request answered 503 `unavailable`: the stack may be broken; the session says. At
// most once every 2 s (traffic from the topology view sends 20 a second).
let unavailableAt = 0;
onUnavailable(() => {
  const now = Date.now();
  if (!app.session || app.session.state !== "ready" || now - unavailableAt < 2000) return;
  unavailableAt = now;
  refreshSession();
});

function tickCountdown() {
  if (!app.session) return;
  const left = renderCountdown(app.session);
  if (left !== null && left <= 0 && !countdown.checking) {
    countdown.checking = true;
    refreshSession().finally(() => {
      countdown.checking = false;
    });
  }
}

/** A data request moved the sliding expiry to a full window from now. */
function slideExpiry() {
  if (!app.session) return;
  const next = Date.now() + app.slidingMs;
  const hard = app.session.hard_expires_at;
  app.session.expires_at = typeof hard === "number" ? Math.min(next, hard) : next;
  renderCountdown(app.session);
}

// --- Launch, end, expiry ---------------------------------------------------------------------

async function launch(selection) {
  remember(selection);
  go({ type: app.phase === "expired" ? "relaunch" : "launch" });
  launcher.setBusy(true);
  announce("Launching your stack…");
  const answer = await request("POST", "/api/sessions", { body: launchBody(selection), quiet: true });
  launcher.setBusy(false);
  if (answer.error) {
    go({ type: "launch-error" });
    launcher.showError(answer.error);
    announce(`Launch failed: ${answer.error.message}`);
    return;
  }
  let session = answer.data;
  if (!session || typeof session !== "object" || !session.code) {
    const again = await request("GET", "/api/session", { quiet: true });
    session = again.data;
  }
  if (!session || typeof session !== "object") {
    go({ type: "launch-error" });
    launcher.showError({ message: "the server created a session but did not describe it; reload the page" });
    return;
  }
  enterSession({ state: "ready", ...session }, "launched");
  byId("stack-title").focus();
}

const EXPIRED_TITLE = "Your session expired — start a new one?";

/**
 * The session is gone: the dialog offers a new one. `words` ({title, reason}) replace the
 * expiry's when it ended for another reason (a re-provision that failed ends the session);
 * given while the dialog is already open, they replace what it says.
 */
function sessionGone(error, words = null) {
  if (app.ending) return;
  const failedRerun = reprov.busy || app.session?.reprovisioning === true;
  const title = words?.title || (failedRerun ? REPROVISION_FAILED_TITLE : EXPIRED_TITLE);
  const reason = words?.reason || (failedRerun
    ? "Your stack could not be made again, so the session was ended."
    : error?.code === "session_missing"
      ? "The server no longer has a session for this browser."
      : "Sessions end an hour after their last use, or when their hard lifetime is up.");
  if (app.gone) {
    if (words) {
      byId("expired-title").textContent = title;
      byId("expired-reason").textContent = reason;
    }
    return;
  }
  if (!["ready", "provisioning", "failed", "launching"].includes(app.phase)) return;
  app.gone = true;
  stopLive();
  app.session = null;
  reprov.reset();
  renderHeader(null);
  reprov.render();
  go({ type: "expired" });
  const dialog = byId("expired-dialog");
  byId("expired-error").textContent = "";
  byId("expired-title").textContent = title;
  byId("expired-reason").textContent = reason;
  if (typeof dialog.showModal === "function") {
    if (!dialog.open) dialog.showModal();
  } else {
    dialog.setAttribute("open", "");
  }
  byId("expired-relaunch").focus();
  announce(title);
}
onSessionGone((error) => sessionGone(error));

byId("expired-relaunch").addEventListener("click", () => {
  closeDialog("expired-dialog");
  const selection = restoreSelection(app.choices, remembered());
  launcher.setChoices(app.choices, selection);
  launch(selection);
});
byId("expired-dismiss").addEventListener("click", () => {
  closeDialog("expired-dialog");
  go({ type: "dismiss" });
  byId("launcher-title").focus();
});
byId("expired-dialog").addEventListener("cancel", (e) => {
  e.preventDefault();
  closeDialog("expired-dialog");
  go({ type: "dismiss" });
});

/** The page leaves its session (ended on purpose): back to the launcher. */
function leaveSession() {
  stopLive();
  app.session = null;
  reprov.reset();
  renderHeader(null);
  reprov.render();
  go({ type: "end" });
}

byId("end-session").addEventListener("click", async () => {
  const btn = byId("end-session");
  btn.disabled = true;
  app.ending = true;
  try {
    const answer = await request("DELETE", "/api/session", { quiet: true });
    if (answer.error && answer.status !== 401 && answer.status !== 410) {
      announce(`The session could not be ended: ${answer.error.message}`);
      return;
    }
    leaveSession();
    launcher.setChoices(app.choices, restoreSelection(app.choices, remembered()));
    announce("Session ended: everything it created is being removed.");
    byId("launcher-title").focus();
  } finally {
    app.ending = false;
    btn.disabled = false;
  }
});

byId("choose-again").addEventListener("click", async () => {
  app.ending = true;
  try {
    await request("DELETE", "/api/session", { quiet: true });
    leaveSession();
    byId("launcher-title").focus();
  } finally {
    app.ending = false;
  }
});

/** A new session with this one's choices, in place of this one (which is ended). */
async function replaceSession() {
  const stack = app.session?.stack;
  const selection = restoreSelection(app.choices, stack && typeof stack === "object" ? stack : remembered());
  app.ending = true;
  try {
    await request("DELETE", "/api/session", { quiet: true });
    leaveSession();
  } finally {
    app.ending = false;
  }
  launcher.setChoices(app.choices, selection);
  launch(selection);
}

// --- Start -----------------------------------------------------------------------------------

function showPageProtocol() {
  byId("page-protocol").textContent = pageProtocol() || "https";
}

async function loadOptions() {
  byId("options-error").hidden = true;
  const answer = await request("GET", "/api/options", { quiet: true });
  if (answer.error) {
    byId("options-error-text").textContent =
      `The list of choices could not be loaded: ${answer.error.message}`;
    byId("options-error").hidden = false;
    return false;
  }
  app.choices = normalizeChoices(answer.data);
  launcher.setChoices(app.choices, restoreSelection(app.choices, remembered()));
  return true;
}

byId("options-retry").addEventListener("click", () => loadOptions());

async function start() {
  showPageProtocol();
  renderPhase("loading");
  const [, existing] = await Promise.all([
    loadOptions(),
    request("GET", "/api/session", { quiet: true }),
  ]);
  if (existing.status === 200 && existing.data && existing.data.code) {
    enterSession(existing.data, "session");
    return;
  }
  go({ type: "no-session" });
  if (existing.status === 410) announce("Your last session expired; your choices are kept below.");
}

start();
