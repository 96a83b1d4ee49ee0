// The session in the header (short code, expiry countdown, provisioner, "End session") and the
// "Your stack" panel: what was chosen, the provisioning steps with their timings, the notes.

import { h, byId, fill } from "./dom.js";
import { describeStack } from "./lib/choices.js";
import { formatCountdown, formatMs, shortCode, timeLeft } from "./lib/format.js";
import { stepWidths } from "./lib/timing.js";
import { transportNote } from "./lib/transport.js";

const STATE_TEXT = {
  provisioning: "Setting up your stack…",
  ready: "Ready",
  failed: "Setting up failed",
  broken: "Broken: part of the stack stopped",
};

export function renderHeader(session) {
  const bar = byId("session-bar");
  if (!session) {
    bar.hidden = true;
    return;
  }
  bar.hidden = false;
  const code = byId("session-code");
  code.textContent = shortCode(session.code);
  code.title = `Session ${session.code}`;
  byId("session-provisioner").textContent = session.provisioner || session.stack?.provisioner || "–";
  renderCountdown(session);
}

/** Updates the countdown; returns the time left in ms (null when unknown). */
export function renderCountdown(session, now = Date.now()) {
  const el = byId("session-countdown");
  const left = timeLeft(session, now);
  if (left === null) {
    el.textContent = "–";
    el.removeAttribute("datetime");
    return null;
  }
  el.textContent = formatCountdown(left);
  const ends = Math.min(...[session.expires_at, session.hard_expires_at].filter((x) => typeof x === "number"));
  el.setAttribute("datetime", new Date(ends).toISOString());
  el.classList.toggle("soon", left < 5 * 60 * 1000);
  return left;
}

export function renderStackPanel(session, choices) {
  byId("session-state").textContent = session.state === "provisioning" && session.reprovisioning
    ? "Re-provisioning your stack…"
    : STATE_TEXT[session.state] || session.state || "";
  byId("stack-panel").dataset.state = session.state || "";
  const fields = describeStack(choices, session.stack || {});
  const where = ["database", "cache"]
    .map((k) => [k, session.resources?.[k]?.where])
    .filter(([, w]) => typeof w === "string" && w);
  fill(byId("stack-fields"), fields.map((f) => [
    h("dt", null, f.label),
    h("dd", { dataset: { field: f.field, value: f.value } }, f.valueLabel),
  ]), where.map(([k, w]) => [
    h("dt", null, `${k} at`),
    h("dd", { class: "where", dataset: { where: k } }, w),
  ]));
  renderSteps(session.steps || []);
  const notes = (Array.isArray(session.notes) ? session.notes : []).map(String);
  const transport = transportNote(session.stack?.transport, pageProtocol());
  const notesEl = byId("notes");
  notesEl.hidden = notes.length === 0 && !transport;
  fill(notesEl, [
    ...notes.map((n) => h("li", null, n)),
    transport ? h("li", { class: "transport-note", dataset: { testid: "transport-note" } }, transport) : null,
  ]);
  byId("failed-actions").hidden = session.state !== "failed";
}

export function renderSteps(steps) {
  const widths = stepWidths(steps);
  const total = steps.reduce((a, s) => a + (typeof s.ms === "number" ? s.ms : 0), 0);
  fill(byId("steps"), steps.map((s, i) =>
    h("li", { class: `step step-${s.status || "pending"}`, dataset: { testid: "step", name: s.name, status: s.status || "" } },
      h("span", { class: "step-name" }, s.name),
      h("span", { class: "step-status" }, s.status || "running"),
      h("span", { class: "step-ms" }, formatMs(s.ms)),
      h("span", { class: "step-bar", "aria-hidden": "true" }, h("span", { style: { width: `${widths[i]}%` } })),
      s.detail ? h("span", { class: "step-detail" }, s.detail) : null)));
  byId("steps-total").textContent = steps.length ? `${steps.length} steps, ${formatMs(total)} in all` : "";
}

/** The protocol this page itself came over ("h2", "h3", "http/1.1"), from Navigation Timing. */
export function pageProtocol() {
  const nav = performance.getEntriesByType("navigation")[0];
  return nav && nav.nextHopProtocol ? nav.nextHopProtocol : "";
}

