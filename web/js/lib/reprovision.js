// A broken session and its re-provision: which banner the lab shows for a session, whether
// it can be re-provisioned, and what an answer of POST /api/session/reprovision means for the
// page. Pure, unit-tested in web/tests/reprovision.test.js.
//
// A session turns `broken` when one of its containers (database or cache) is killed from
// outside; GET /api/session then carries `problem` (what happened, what to do), and the event
// stream sends `state: broken` and `lost: {message}`. Re-provisioning removes the stack and
// makes it again with the same choices under the same session: its data starts empty.

/** The server's own words when it sent none (a `state: broken` seen before its `lost`). */
export const DEFAULT_PROBLEM =
  "A part of your stack (its database or cache) stopped. Re-provision it to carry on, or start a new session.";

/** What re-provisioning does, said before a person asks for it. */
export const REPROVISION_NOTE =
  "Re-provisioning removes your stack's database and cache and makes them again with the same choices, under the same session. Everything they held is erased: they start empty.";

/** Whether the server takes a re-provision of a session in this state (and none is running). */
export function canReprovision(session, busy = false) {
  return Boolean(session) && !busy && (session.state === "ready" || session.state === "broken");
}

/**
 * The banner for a session, or null when there is none to show.
 * @param {object|null} session the session as the page has it (state, problem, reprovisioning)
 * @param {{busy?: boolean, error?: string, done?: boolean, awaitingWords?: boolean}} rp the
 *   page's own re-provision: busy while its request runs, error when it was refused, done once
 *   it succeeded; awaitingWords: a `state: broken` event came and its `lost` (the server's
 *   words) is on its way, so no banner yet (an alert read out once, with the real message)
 * @returns {null | {kind: "broken"|"reprovisioning"|"done", tone: "bad"|"warn"|"good",
 *   title: string, message: string, note: string, error: string, actions: string[]}}
 *   actions name the buttons to offer: "reprovision", "new-session", "dismiss".
 */
export function problemBanner(session, rp = {}) {
  if (!session) return null;
  const error = typeof rp.error === "string" ? rp.error : "";
  if (rp.busy || (session.state === "provisioning" && session.reprovisioning === true)) {
    return {
      kind: "reprovisioning",
      tone: "warn",
      title: "Re-provisioning your stack…",
      message: "Removing its database and cache and making them again with the same choices. The steps appear under “Your stack” as they happen.",
      note: "",
      error: "",
      actions: [],
    };
  }
  if (session.state === "broken") {
    const known = typeof session.problem === "string" && session.problem.trim() !== "";
    if (!known && rp.awaitingWords) return null;
    const problem = typeof session.problem === "string" && session.problem.trim() ? session.problem.trim() : DEFAULT_PROBLEM;
    return {
      kind: "broken",
      tone: "bad",
      title: "Your stack stopped working",
      message: problem,
      note: REPROVISION_NOTE,
      error: error ? `Re-provisioning did not work: ${error}` : "",
      actions: ["reprovision", "new-session"],
    };
  }
  if (session.state === "ready" && error) {
    // A re-provision of a ready session was refused: the stack is still as it was.
    return {
      kind: "broken",
      tone: "warn",
      title: "Your stack was not re-provisioned",
      message: error,
      note: "It is still as it was, with its data.",
      error: "",
      actions: ["dismiss"],
    };
  }
  if (session.state === "ready" && rp.done) {
    return {
      kind: "done",
      tone: "good",
      title: "Your stack was re-provisioned",
      message: "Same choices, same session. Its database and cache start empty: add users again in the Console.",
      note: "",
      error: "",
      actions: ["dismiss"],
    };
  }
  return null;
}

/**
 * What an answer of POST /api/session/reprovision means.
 * @param {{status: number, error: null|{code: string, message: string}, data: any}} answer
 * @returns {{kind: "ready"|"busy"|"ended"|"gone"|"error", message: string}}
 *   ready: the stack is made again (data is the session view); busy: it is being made, try
 *   later (409); ended: making it again failed and the session was ended (offer a new one);
 *   gone: the session had already ended (401/410); error: anything else (a 503 `unavailable`
 *   when the old stack could not be removed — the session is broken still —, no answer, …).
 */
export function reprovisionOutcome(answer) {
  const e = answer?.error;
  if (!e) return { kind: "ready", message: "" };
  const message = typeof e.message === "string" && e.message ? e.message : `HTTP ${answer.status}`;
  if (e.code === "session_busy" || answer.status === 409) return { kind: "busy", message };
  if (e.code === "provisioning_failed") return { kind: "ended", message };
  if (answer.status === 401 || answer.status === 410 || e.code === "session_expired" || e.code === "session_missing") {
    return { kind: "gone", message };
  }
  return { kind: "error", message };
}
