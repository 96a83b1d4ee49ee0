import { test } from "node:test";
import assert from "node:assert/strict";
import {
  problemBanner, canReprovision, reprovisionOutcome, DEFAULT_PROBLEM, REPROVISION_NOTE,
} from "../js/lib/reprovision.js";
import { applySessionEvent, mergeSession, nextPhase } from "../js/lib/state.js";

const LOST = "the session's database container (postgres) stopped: it was killed from outside (exit 137); re-provision the session (POST /api/session/reprovision) or start a new one";

test("a ready session has no banner; a broken one says the server's words and offers both ways out", () => {
  assert.equal(problemBanner(null), null);
  assert.equal(problemBanner({ state: "ready" }), null);
  assert.equal(problemBanner({ state: "provisioning", steps: [] }), null, "a first launch is not a re-provision");
  const b = problemBanner({ state: "broken", problem: LOST });
  assert.equal(b.kind, "broken");
  assert.equal(b.tone, "bad");
  assert.equal(b.message, LOST);
  assert.equal(b.note, REPROVISION_NOTE);
  assert.match(b.note, /start empty/);
  assert.deepEqual(b.actions, ["reprovision", "new-session"]);
  assert.equal(b.error, "");
});

test("a broken session whose message has not come yet still gets a banner", () => {
  assert.equal(problemBanner({ state: "broken" }).message, DEFAULT_PROBLEM);
  assert.equal(problemBanner({ state: "broken", problem: "  " }).message, DEFAULT_PROBLEM);
  assert.equal(problemBanner({ state: "broken", problem: null }).message, DEFAULT_PROBLEM);
  // Right after `state: broken`, with its `lost` on the way: nothing yet, so the alert is
  // read once, with the server's words; the words win as soon as they are known.
  assert.equal(problemBanner({ state: "broken" }, { awaitingWords: true }), null);
  assert.equal(problemBanner({ state: "broken", problem: LOST }, { awaitingWords: true }).message, LOST);
});

test("while a re-provision runs the banner says so and offers nothing to press", () => {
  const busy = problemBanner({ state: "broken", problem: LOST }, { busy: true });
  assert.equal(busy.kind, "reprovisioning");
  assert.deepEqual(busy.actions, []);
  // Started elsewhere (another tab): the session's own flag is enough.
  assert.equal(problemBanner({ state: "provisioning", reprovisioning: true }).kind, "reprovisioning");
});

test("a refused re-provision keeps the banner with why; done says the data starts empty", () => {
  const broken = problemBanner({ state: "broken", problem: LOST }, { error: "the old stack could not be removed; try again" });
  assert.equal(broken.kind, "broken");
  assert.equal(broken.error, "Re-provisioning did not work: the old stack could not be removed; try again");
  const ready = problemBanner({ state: "ready" }, { error: "the server could not be reached" });
  assert.equal(ready.tone, "warn");
  assert.equal(ready.message, "the server could not be reached");
  assert.deepEqual(ready.actions, ["dismiss"]);
  const done = problemBanner({ state: "ready" }, { done: true });
  assert.equal(done.kind, "done");
  assert.match(done.message, /start empty/);
  assert.equal(problemBanner({ state: "broken", problem: LOST }, { done: true }).kind, "broken",
    "broken again after a re-provision: the problem wins");
});

test("canReprovision: only ready or broken sessions, one at a time", () => {
  assert.equal(canReprovision({ state: "ready" }), true);
  assert.equal(canReprovision({ state: "broken" }), true);
  assert.equal(canReprovision({ state: "broken" }, true), false);
  for (const state of ["provisioning", "failed", "ending", undefined]) assert.equal(canReprovision({ state }), false, state);
  assert.equal(canReprovision(null), false);
});

test("reprovisionOutcome reads each answer of POST /api/session/reprovision", () => {
  const err = (status, code, message) => ({ status, data: null, error: { status, code, message } });
  assert.deepEqual(reprovisionOutcome({ status: 200, data: { state: "ready" }, error: null }), { kind: "ready", message: "" });
  assert.equal(reprovisionOutcome(err(409, "session_busy", "the session is provisioning; wait")).kind, "busy");
  assert.deepEqual(reprovisionOutcome(err(503, "provisioning_failed", "database: no space; the session was ended; start a new one")),
    { kind: "ended", message: "database: no space; the session was ended; start a new one" });
  assert.equal(reprovisionOutcome(err(503, "unavailable", "the old stack could not be removed (x); try again")).kind, "error");
  assert.equal(reprovisionOutcome(err(410, "session_expired", "ended")).kind, "gone");
  assert.equal(reprovisionOutcome(err(401, "session_missing", "no session")).kind, "gone");
  assert.deepEqual(reprovisionOutcome(err(0, "network", "")), { kind: "error", message: "HTTP 0" });
});

test("the event stream's state and lost events make a session broken, with the message", () => {
  let s = { state: "ready", steps: [{ name: "database", status: "done" }], problem: null };
  s = applySessionEvent(s, "state", { state: "broken" });
  assert.equal(s.state, "broken");
  assert.equal(problemBanner(s).message, DEFAULT_PROBLEM);
  s = applySessionEvent(s, "lost", { message: LOST });
  assert.equal(s.problem, LOST);
  assert.equal(problemBanner(s).message, LOST);
  // A lost with no words keeps what was known; one alone also makes the session broken.
  assert.equal(applySessionEvent(s, "lost", {}).problem, LOST);
  assert.equal(applySessionEvent({ state: "ready" }, "lost", { message: "x" }).state, "broken");
  // The lab stays in view for a broken session, also when found on page load.
  assert.equal(nextPhase("ready", { type: "state", state: "broken" }), "ready");
  assert.equal(nextPhase("loading", { type: "session", state: "broken" }), "ready");
  assert.equal(nextPhase("provisioning", { type: "state", state: "broken" }), "ready",
    "a re-provision that could not remove the old stack leaves it broken");
});

test("a re-provision over the stream: new steps only, the problem cleared, then ready", () => {
  let s = { state: "broken", problem: LOST, steps: [{ name: "database", status: "done", ms: 900 }] };
  s = applySessionEvent(s, "state", { state: "provisioning" });
  assert.equal(s.reprovisioning, true);
  assert.deepEqual(s.steps, [], "the old run's steps are gone");
  assert.equal(s.problem, null);
  assert.equal(nextPhase("ready", { type: "state", state: s.state }), "provisioning");
  s = applySessionEvent(s, "step", { name: "teardown", status: "done", ms: 4 });
  // GET /api/session during the run still lists the previous run's steps: the stream's stay.
  const polled = mergeSession(s, { state: "provisioning", steps: [{ name: "database", status: "done", ms: 900 }], problem: null });
  assert.deepEqual(polled.steps.map((x) => x.name), ["teardown"]);
  assert.equal(polled.reprovisioning, true);
  s = applySessionEvent(polled, "state", { state: "ready" });
  assert.equal(s.reprovisioning, false);
  assert.equal(problemBanner(s), null);
  // The final answer brings the whole new list.
  const after = mergeSession(s, { state: "ready", steps: [{ name: "teardown" }, { name: "database" }] });
  assert.deepEqual(after.steps.map((x) => x.name), ["teardown", "database"]);
});

test("a re-provision seen by polling only: the stale steps are not shown", () => {
  const ready = { state: "ready", steps: [{ name: "database", status: "done" }] };
  const s = mergeSession(ready, { state: "provisioning", steps: [{ name: "database", status: "done" }] });
  assert.equal(s.reprovisioning, true);
  assert.deepEqual(s.steps, []);
  assert.equal(problemBanner(s).kind, "reprovisioning");
  // A first launch polled while provisioning keeps the server's steps.
  const first = mergeSession({ state: "provisioning", steps: [] }, { state: "provisioning", steps: [{ name: "database" }] });
  assert.equal(first.reprovisioning, false);
  assert.equal(first.steps.length, 1);
  // Broken, as GET /api/session says it at load or on a poll.
  const broken = mergeSession(ready, { state: "broken", problem: LOST });
  assert.equal(problemBanner(broken).message, LOST);
  assert.equal(mergeSession(broken, { state: "ready", problem: null }).problem, null);
  assert.equal(mergeSession(ready, null), ready);
});
