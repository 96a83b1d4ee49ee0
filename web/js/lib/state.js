// The page's phases and how events move between them, and how a session object takes in
// step and state events. Pure, unit-tested in web/tests/state.test.js.
//
//   loading ──no session──▶ choosing ──launch──▶ launching ──201 ready──▶ ready
//      │                      ▲   ▲                  │  └──201 provisioning──▶ provisioning
//      └──session──▶ (its state)  └──error (400/429/503)─┘                        │
//   provisioning ──state ready──▶ ready;  ──state failed──▶ failed
//   any lab phase ──expired──▶ expired ──relaunch──▶ launching;  ──dismiss──▶ choosing
//   any lab phase ──end──▶ choosing
//
// A `broken` session (one of its containers was killed from outside) stays in the lab phase
// ("ready"): the lab stays in view with a banner that offers to re-provision it. A
// re-provision moves it through provisioning (its new steps) back to ready.

export const PHASES = ["loading", "choosing", "launching", "provisioning", "ready", "failed", "expired"];

const fromSessionState = (state) =>
  state === "ready" || state === "broken"
    ? "ready"
    : state === "failed" ? "failed" : state === "provisioning" ? "provisioning" : null;

/**
 * The next phase, or the same phase when the event does not apply there.
 * @param {string} phase
 * @param {{type: string, state?: string}} event
 */
export function nextPhase(phase, event) {
  const t = event?.type;
  switch (t) {
    case "no-session":
      return phase === "loading" ? "choosing" : phase;
    case "session": // a session was found (page load) or polled
      return fromSessionState(event.state) || phase;
    case "launch":
      return phase === "choosing" || phase === "expired" || phase === "failed" ? "launching" : phase;
    case "launched":
      return phase === "launching" ? fromSessionState(event.state) || "ready" : phase;
    case "launch-error":
      return phase === "launching" ? "choosing" : phase;
    case "state":
      if (phase === "provisioning" || phase === "ready" || phase === "failed") {
        return fromSessionState(event.state) || phase;
      }
      return phase;
    case "expired":
      return phase === "ready" || phase === "provisioning" || phase === "failed" || phase === "launching"
        ? "expired"
        : phase;
    case "relaunch":
      return phase === "expired" ? "launching" : phase;
    case "dismiss":
    case "end":
      return phase === "loading" ? phase : "choosing";
    default:
      return phase;
  }
}

/** Whether the lab (console, cache, …) is shown in a phase. */
export const labVisible = (phase) => phase === "ready";
/** Whether live updates (events, polling) should run in a phase. */
export const liveWanted = (phase) => phase === "ready" || phase === "provisioning";

/** The steps with one step event taken in: a step of the same name is replaced, else added. */
export function upsertStep(steps, step) {
  if (!step || typeof step.name !== "string") return steps || [];
  const list = Array.isArray(steps) ? steps : [];
  const i = list.findIndex((s) => s.name === step.name);
  if (i === -1) return [...list, step];
  const copy = list.slice();
  copy[i] = { ...list[i], ...step };
  return copy;
}

/**
 * Whether a session going from state `from` to `to` starts a new provisioning run (a
 * re-provision: only a ready or broken session can be made again). Its old steps then no
 * longer describe what is happening.
 */
export const startsRerun = (from, to) => to === "provisioning" && (from === "ready" || from === "broken");

/** The session in a new state: `problem` only while broken, `reprovisioning` during a rerun. */
function withState(session, state) {
  const next = { ...session, state };
  if (state !== "broken") next.problem = null;
  if (startsRerun(session.state, state)) {
    next.steps = [];
    next.reprovisioning = true;
  } else if (state !== "provisioning") {
    next.reprovisioning = false;
  }
  return next;
}

/**
 * The session with an event taken in (step, state, or lost: `{"message"}`, one of its
 * containers was killed and the session is broken); the input is not changed.
 */
export function applySessionEvent(session, name, data) {
  if (!session || !data || typeof data !== "object") return session;
  if (name === "step") return { ...session, steps: upsertStep(session.steps, data) };
  if (name === "state" && typeof data.state === "string") {
    return data.state === session.state ? session : withState(session, data.state);
  }
  if (name === "lost") {
    const problem = typeof data.message === "string" && data.message ? data.message : session.problem ?? null;
    return { ...withState(session, "broken"), problem };
  }
  return session;
}

/**
 * The session as GET /api/session answered it, over the one the page has. While a
 * re-provision runs the server still reports the previous run's steps until the new run
 * ends, so the page keeps the steps its event stream brought (none yet, when it polls).
 */
export function mergeSession(current, fetched) {
  if (!fetched || typeof fetched !== "object") return current;
  if (!current) return fetched;
  const rerun = fetched.state === "provisioning"
    && (current.reprovisioning === true || startsRerun(current.state, "provisioning"));
  const next = { ...current, ...fetched };
  if (rerun) {
    next.steps = current.reprovisioning === true && Array.isArray(current.steps) ? current.steps : [];
    next.reprovisioning = true;
  } else {
    next.reprovisioning = false;
  }
  if (next.state !== "broken") next.problem = null;
  return next;
}

/** Inserts captured requests, newest first, without duplicates, at most `max`. */
export function mergeRequests(existing, incoming, max = 100) {
  const seen = new Set();
  const out = [];
  for (const r of [...incoming, ...existing]) {
    if (!r || typeof r !== "object") continue;
    const key = r.request_id ?? `${r.at_unix_ms}|${r.method}|${r.path}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(r);
  }
  out.sort((a, b) => (b.at_unix_ms ?? 0) - (a.at_unix_ms ?? 0));
  return out.slice(0, max);
}

/** Reads this page makes to watch the session (polling), as opposed to data requests. */
const WATCH_PATHS = new Set([
  "/api/cache",
  "/api/requests",
  "/api/topology",
  "/api/analysis",
  "/api/session",
  "/api/session/events",
  "/api/options",
]);

/** Whether a captured request is the page watching (GET of a view), which the inspector can hide. */
export function isWatching(req) {
  return req?.method === "GET" && WATCH_PATHS.has(req.path);
}
