import { test } from "node:test";
import assert from "node:assert/strict";
import { newCounters, started, finished, due, answerOk } from "../js/lib/traffic.js";

test("counters: sent, ok, failed; aborted requests are not failures", () => {
  let c = newCounters();
  c = started(started(started(c)));
  assert.equal(c.inFlight, 3);
  c = finished(c, { ok: true });
  c = finished(c, { ok: false, error: "HTTP 502" });
  c = finished(c, { aborted: true });
  assert.deepEqual(c, { sent: 2, ok: 1, failed: 1, inFlight: 0, lastError: "HTTP 502" });
});

test("due keeps the rate, catches up in bursts, respects in-flight", () => {
  const base = { startedAt: 1000, rate: 20, sent: 0, inFlight: 0 };
  assert.equal(due({ ...base, now: 1000 }), 1, "one at the start");
  assert.equal(due({ ...base, now: 1000, sent: 1 }), 0);
  assert.equal(due({ ...base, now: 1100, sent: 1 }), 2, "two more due after 100 ms at 20/s");
  assert.equal(due({ ...base, now: 3000, sent: 1 }), 5, "never more than a burst");
  assert.equal(due({ ...base, now: 3000, sent: 1, inFlight: 7 }), 1, "never more than 8 in flight");
  assert.equal(due({ ...base, now: 999 }), 0);
  assert.equal(due({ ...base, now: 2000, rate: 0 }), 0);
});

test("answerOk", () => {
  assert.equal(answerOk(200), true);
  assert.equal(answerOk(204), true);
  assert.equal(answerOk(502), false);
  assert.equal(answerOk(0), false);
});
