// Re-provisioning: the banner over the session (a broken session with the server's words and
// "Re-provision", a re-provision running, or done), the header's "Re-provision" with its
// confirm dialog, and POST /api/session/reprovision. This page's re-provision (its request
// running, why it was refused, that it succeeded) is kept here; the session itself is app.js's.

import { byId, closeDialog } from "./dom.js";
import { mergeSession } from "./lib/state.js";
import { problemBanner, canReprovision, reprovisionOutcome, REPROVISION_NOTE } from "./lib/reprovision.js";

export const REPROVISION_FAILED_TITLE = "Re-provisioning failed — start a new session?";

const IDLE = { busy: false, error: "", done: false };
const DONE_NOTE = "Your stack was re-provisioned: same choices, same session. Its database and cache start empty.";

/**
 * @param {{
 *   request: Function, announce: (msg: string) => void,
 *   session: () => object | null, isGone: () => boolean,
 *   adoptSession: (session: object) => void, refreshSession: () => Promise<void>,
 *   renderSession: () => void, refreshViews: () => void,
 *   sessionGone: (error: object, words: {title: string, reason: string}) => void,
 *   onNewSession: () => void, onDismiss: () => void,
 * }} deps
 */
export function createReprovisionView(deps) {
  let rp = { ...IDLE };
  // A `state: broken` event came without its `lost` yet: the banner waits for those words.
  let awaitingWords = false;

  /**
   * The banner over the session. Written only when what it says changes, so the alert is not
   * read out again at every poll.
   */
  function render() {
    const session = deps.session();
    const b = problemBanner(session, { ...rp, awaitingWords });
    const problem = b && b.kind !== "done" ? b : null;
    const banner = byId("problem-banner");
    const key = problem ? JSON.stringify(problem) : "";
    if (key !== (banner.dataset.key || "")) {
      banner.dataset.key = key;
      banner.hidden = !problem;
      banner.dataset.kind = problem?.kind || "";
      banner.className = `banner callout ${problem?.tone || "bad"}`;
      banner.setAttribute("aria-busy", problem?.kind === "reprovisioning" ? "true" : "false");
      byId("problem-title").textContent = problem?.title || "";
      byId("problem-message").textContent = problem?.message || "";
      byId("problem-note").textContent = problem?.note || "";
      byId("problem-error").textContent = problem?.error || "";
      const actions = problem?.actions || [];
      byId("reprovision").hidden = !actions.includes("reprovision");
      byId("problem-new-session").hidden = !actions.includes("new-session");
      byId("problem-dismiss").hidden = !actions.includes("dismiss");
    }
    const done = byId("reprovision-done");
    done.hidden = b?.kind !== "done";
    if (b?.kind === "done") {
      byId("reprovision-done-title").textContent = b.title;
      byId("reprovision-done-message").textContent = b.message;
    }
    byId("session-reprovision").hidden = !canReprovision(session, rp.busy);
  }

  /**
   * POST /api/session/reprovision: the same choices, the same session, a new stack. Its steps
   * come in on the event stream (or by polling) into "Your stack"; on success the views are read
   * again, empty.
   */
  async function reprovision() {
    if (!canReprovision(deps.session(), rp.busy)) return;
    rp = { ...IDLE, busy: true };
    render();
    byId("problem-title").focus();
    const answer = await deps.request("POST", "/api/session/reprovision", { body: {} });
    const wasDone = rp.done; // the event stream may have seen it finish first
    rp = { ...rp, busy: false };
    const outcome = reprovisionOutcome(answer);
    if (outcome.kind === "ended") {
      // Making it again failed, and the server ended the session: offer a new one (the event
      // stream may have opened the dialog already; it then says why).
      deps.sessionGone({ code: "provisioning_failed" }, {
        title: REPROVISION_FAILED_TITLE,
        reason: `Your stack could not be made again, so the session was ended: ${outcome.message}`,
      });
      return;
    }
    if (!deps.session() || deps.isGone()) return;
    switch (outcome.kind) {
      case "ready": {
        deps.adoptSession(mergeSession({ ...deps.session(), reprovisioning: false }, answer.data));
        if (!wasDone) {
          deps.refreshViews();
          deps.announce(DONE_NOTE);
        }
        rp = { ...IDLE, done: true };
        deps.renderSession();
        focusIfLost(byId("reprovision-done-title"));
        break;
      }
      case "gone":
        break; // api.js has opened the expired dialog
      default: {
        // Refused (busy), or failed before anything was made (the session is broken still).
        rp = { ...IDLE, error: outcome.message };
        await deps.refreshSession();
        deps.renderSession();
        const focus = ["reprovision", "problem-dismiss"].map(byId).find((b) => b && !b.hidden);
        (focus || byId("problem-title")).focus();
        deps.announce(`Re-provisioning did not work: ${outcome.message}`);
      }
    }
  }

  /** Moves focus to `el` unless the person has moved it elsewhere (it was on the banner, now gone). */
  function focusIfLost(el) {
    const at = document.activeElement;
    if (!at || at === document.body || byId("problem-banner").contains(at)) el.focus();
  }

  function dismiss() {
    rp = { ...IDLE };
    render();
    deps.onDismiss();
  }

  byId("reprovision").addEventListener("click", () => reprovision());
  byId("problem-new-session").addEventListener("click", () => deps.onNewSession());
  byId("problem-dismiss").addEventListener("click", dismiss);
  byId("reprovision-dismiss").addEventListener("click", dismiss);

  // The header's "Re-provision", for a session that works: it erases the data, so it asks first.
  byId("reprovision-dialog-text").textContent = REPROVISION_NOTE;
  byId("session-reprovision").addEventListener("click", () => {
    const dialog = byId("reprovision-dialog");
    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
    byId("reprovision-cancel").focus();
  });
  byId("reprovision-confirm").addEventListener("click", () => {
    closeDialog("reprovision-dialog");
    reprovision();
  });
  byId("reprovision-cancel").addEventListener("click", () => {
    closeDialog("reprovision-dialog");
    byId("session-reprovision").focus();
  });
  byId("reprovision-dialog").addEventListener("close", () => {
    if (document.activeElement === document.body && !byId("session-reprovision").hidden) {
      byId("session-reprovision").focus();
    }
  });

  return {
    /** This page's re-provision request is running. */
    get busy() {
      return rp.busy;
    },
    /** Forgets this page's re-provision (a new session, or none); call render() after. */
    reset() {
      rp = { ...IDLE };
    },
    render,
    /**
     * The session's state changed (its event, or its answer): a re-provision that has just
     * finished (here or in another tab) leaves empty stores, so the views are read again.
     */
    stateChanged(before) {
      if (before?.reprovisioning === true && deps.session()?.state === "ready" && !rp.done) {
        rp = { ...IDLE, done: true };
        deps.refreshViews();
        deps.announce(DONE_NOTE);
      }
      render();
    },
    /** Whether the banner waits for the words of a `state: broken` (see app.js's onEvent). */
    awaitWords(on) {
      awaitingWords = on;
    },
    /** Those words came (or the session's answer, which has them): the banner says them. */
    wordsCame() {
      if (awaitingWords) {
        awaitingWords = false;
        render();
      }
    },
  };
}
