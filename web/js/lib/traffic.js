// The failover drill's traffic: a steady request rate, counted. The scheduler answers "how many
// requests are due now" from the start time, the rate and how many were sent, so a slow tab
// catches up instead of drifting, within a cap on requests in flight.
// Pure, unit-tested in web/tests/traffic.test.js.

export function newCounters() {
  return { sent: 0, ok: 0, failed: 0, inFlight: 0, lastError: "" };
}

/** The counters after one request started. */
export function started(c) {
  return { ...c, sent: c.sent + 1, inFlight: c.inFlight + 1 };
}

/**
 * The counters after one request ended: `outcome` is {ok: true} or {ok: false, error}, or
 * {aborted: true} for a request stopped by the person (not a failure).
 */
export function finished(c, outcome) {
  const inFlight = Math.max(0, c.inFlight - 1);
  if (outcome?.aborted) return { ...c, inFlight, sent: Math.max(0, c.sent - 1) };
  if (outcome?.ok) return { ...c, inFlight, ok: c.ok + 1 };
  return { ...c, inFlight, failed: c.failed + 1, lastError: outcome?.error || "failed" };
}

/**
 * How many requests to start now so that `rate` per second is kept since `startedAt`, never
 * more than `maxInFlight` at once nor `burst` in one go.
 */
export function due({ startedAt, now, rate, sent, inFlight, maxInFlight = 8, burst = 5 }) {
  if (!(rate > 0) || now < startedAt) return 0;
  const target = Math.floor(((now - startedAt) / 1000) * rate) + 1;
  const behind = Math.max(0, target - sent);
  return Math.max(0, Math.min(behind, maxInFlight - inFlight, burst));
}

/** Whether an HTTP answer counts as ok for the drill. */
export const answerOk = (status) => status >= 200 && status < 300;
