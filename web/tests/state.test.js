import { test } from "node:test";
import assert from "node:assert/strict";
import { nextPhase, upsertStep, applySessionEvent, mergeRequests, labVisible, liveWanted } from "../js/lib/state.js";

test("the launch journey", () => {
  let p = "loading";
  p = nextPhase(p, { type: "no-session" });
  assert.equal(p, "choosing");
  p = nextPhase(p, { type: "launch" });
  assert.equal(p, "launching");
  assert.equal(nextPhase(p, { type: "launch-error" }), "choosing");
  assert.equal(nextPhase(p, { type: "launched", state: "ready" }), "ready");
  p = nextPhase(p, { type: "launched", state: "provisioning" });
  assert.equal(p, "provisioning");
  assert.equal(nextPhase(p, { type: "state", state: "failed" }), "failed");
  p = nextPhase(p, { type: "state", state: "ready" });
  assert.equal(p, "ready");
  assert.equal(labVisible(p), true);
  assert.equal(liveWanted("choosing"), false);
});

test("a session found on load goes straight to its state", () => {
  assert.equal(nextPhase("loading", { type: "session", state: "ready" }), "ready");
  assert.equal(nextPhase("loading", { type: "session", state: "provisioning" }), "provisioning");
  assert.equal(nextPhase("loading", { type: "session", state: "weird" }), "loading");
});

test("expiry, relaunch, dismiss and end", () => {
  assert.equal(nextPhase("ready", { type: "expired" }), "expired");
  assert.equal(nextPhase("provisioning", { type: "expired" }), "expired");
  assert.equal(nextPhase("choosing", { type: "expired" }), "choosing", "no dialog while choosing");
  assert.equal(nextPhase("expired", { type: "relaunch" }), "launching");
  assert.equal(nextPhase("expired", { type: "dismiss" }), "choosing");
  assert.equal(nextPhase("ready", { type: "end" }), "choosing");
  assert.equal(nextPhase("expired", { type: "launch" }), "launching");
});

test("events that do not apply leave the phase alone", () => {
  assert.equal(nextPhase("choosing", { type: "launched", state: "ready" }), "choosing");
  assert.equal(nextPhase("choosing", { type: "state", state: "ready" }), "choosing");
  assert.equal(nextPhase("ready", { type: "bogus" }), "ready");
  assert.equal(nextPhase("ready", null), "ready");
});

test("steps are updated by name, in order", () => {
  let steps = upsertStep([], { name: "database", status: "done", ms: 3 });
  steps = upsertStep(steps, { name: "cache", status: "done", ms: 1 });
  steps = upsertStep(steps, { name: "database", status: "failed", detail: "x" });
  assert.deepEqual(steps, [
    { name: "database", status: "failed", ms: 3, detail: "x" },
    { name: "cache", status: "done", ms: 1 },
  ]);
  assert.deepEqual(upsertStep(steps, { nope: 1 }), steps);
  assert.deepEqual(upsertStep(undefined, { name: "a" }), [{ name: "a" }]);
});

test("applySessionEvent does not change its input", () => {
  const s = { state: "provisioning", steps: [] };
  const a = applySessionEvent(s, "step", { name: "route", status: "done", ms: 1 });
  assert.equal(a.steps.length, 1);
  assert.equal(s.steps.length, 0);
  assert.equal(applySessionEvent(a, "state", { state: "ready" }).state, "ready");
  assert.equal(applySessionEvent(a, "state", {}).state, "provisioning");
  assert.equal(applySessionEvent(null, "state", { state: "ready" }), null);
});

test("mergeRequests keeps newest first without duplicates, bounded", () => {
  const a = { request_id: "a", at_unix_ms: 1 };
  const b = { request_id: "b", at_unix_ms: 2 };
  const c = { request_id: "c", at_unix_ms: 3 };
  assert.deepEqual(mergeRequests([b, a], [c, b]).map((r) => r.request_id), ["c", "b", "a"]);
  assert.deepEqual(mergeRequests([b, a], [c], 2).map((r) => r.request_id), ["c", "b"]);
  assert.deepEqual(mergeRequests([], [null, c]).length, 1);
});

test("isWatching tells the page's own polling from data requests", async () => {
  const { isWatching } = await import("../js/lib/state.js");
  assert.equal(isWatching({ method: "GET", path: "/api/cache" }), true);
  assert.equal(isWatching({ method: "GET", path: "/api/topology" }), true);
  assert.equal(isWatching({ method: "DELETE", path: "/api/cache" }), false, "a flush is an action");
  assert.equal(isWatching({ method: "GET", path: "/api/users" }), false);
  assert.equal(isWatching({ method: "POST", path: "/graphql" }), false);
  assert.equal(isWatching(null), false);
});
