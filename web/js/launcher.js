// The stack picker: one fieldset per choice (provisioner first, since it decides which engines
// can be had), radios with one sentence each, options this install cannot offer disabled with
// the reason, the defaults (or the last choices) preselected, and "Launch".

import { h, byId, fill } from "./dom.js";
import { orderChoices, optionState, reconcile } from "./lib/choices.js";

const optId = (field, value) => `opt-${field}-${value}`.replace(/[^A-Za-z0-9_-]/g, "_");

/**
 * @param {{onLaunch: (selection: object) => void, announce: (msg: string) => void}} deps
 */
export function createLauncher({ onLaunch, announce }) {
  const form = byId("choices-form");
  const box = byId("choices");
  const launchBtn = byId("launch");
  const summary = byId("launch-summary");
  const general = byId("launch-error");
  let choices = [];
  let selection = {};
  let blocked = [];

  function render() {
    const ordered = orderChoices(choices);
    fill(box, ordered.map((c, i) =>
      h("fieldset", { class: "choice", id: `choice-${c.field}`, dataset: { field: c.field }, "aria-describedby": `choice-${c.field}-desc` },
        h("legend", null, h("span", { class: "step-no", "aria-hidden": "true" }, `${i + 1}`), c.label),
        c.description ? h("p", { class: "choice-desc", id: `choice-${c.field}-desc` }, c.description) : null,
        h("div", { class: "options" }, c.options.map((o) => {
          const id = optId(c.field, o.value);
          return h("div", { class: "option", id: `${id}-box`, dataset: { value: o.value } },
            h("input", { type: "radio", name: c.field, id, value: o.value, "aria-describedby": `${id}-desc ${id}-why` }),
            // The label is the option's name only; its sentence and any reason it is
            // unavailable are descriptions. The label's ::after covers the whole box, so a
            // click anywhere on it picks the option.
            h("div", { class: "opt-text" },
              h("label", { for: id, class: "opt-label" }, o.label),
              h("span", { class: "opt-desc", id: `${id}-desc` }, o.description),
              h("span", { class: "opt-why", id: `${id}-why` })));
        })),
        h("p", { class: "choice-empty", id: `choice-${c.field}-empty`, hidden: true }, "Nothing to choose here with the other choices."),
        h("p", { class: "field-error", id: `error-${c.field}`, role: "alert" }))));
    sync();
  }

  /** Brings every radio in line with the selection: shown, enabled, checked, reason. */
  function sync() {
    for (const c of choices) {
      let shown = 0;
      for (const o of c.options) {
        const id = optId(c.field, o.value);
        const input = byId(id);
        if (!input) continue;
        const st = optionState(choices, c, o, selection);
        const boxEl = byId(`${id}-box`);
        boxEl.hidden = !st.visible;
        boxEl.classList.toggle("disabled", !st.enabled);
        input.disabled = !st.enabled;
        input.checked = selection[c.field] === o.value;
        byId(`${id}-why`).textContent = st.enabled ? "" : `Not available: ${st.reason}`;
        if (st.visible) shown += 1;
      }
      const empty = byId(`choice-${c.field}-empty`);
      if (empty) empty.hidden = shown > 0;
    }
    const labels = orderChoices(choices)
      .filter((c) => selection[c.field] !== undefined)
      .map((c) => c.options.find((o) => o.value === selection[c.field])?.label || selection[c.field]);
    summary.textContent = labels.length ? `Your stack: ${labels.join(" · ")}` : "";
    if (blocked.length) {
      const names = blocked.map((f) => choices.find((c) => c.field === f)?.label || f);
      general.textContent = `Nothing can be chosen for ${names.join(", ")} with the other choices; change them to launch.`;
      launchBtn.disabled = true;
    } else {
      launchBtn.disabled = false;
      if (general.dataset.kind === "blocked") general.textContent = "";
    }
    general.dataset.kind = blocked.length ? "blocked" : "";
  }

  form.addEventListener("change", (e) => {
    const t = e.target;
    if (!(t instanceof HTMLInputElement) || t.type !== "radio") return;
    const field = t.name;
    clearError(field);
    const r = reconcile(choices, { ...selection, [field]: t.value }, field);
    selection = r.selection;
    blocked = r.blocked;
    sync();
    if (r.changes.length) {
      const label = (f, v) => {
        const c = choices.find((x) => x.field === f);
        return c?.options.find((o) => o.value === v)?.label || v;
      };
      announce(r.changes.map((ch) => {
        const c = choices.find((x) => x.field === ch.field);
        return `${c?.label || ch.field} changed from ${label(ch.field, ch.from)} to ${label(ch.field, ch.to)} (${ch.reason}).`;
      }).join(" "));
    }
  });

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (launchBtn.disabled) return;
    clearErrors();
    onLaunch({ ...selection });
  });

  function clearError(field) {
    const el = byId(`error-${field}`);
    if (el) el.textContent = "";
    byId(`choice-${field}`)?.classList.remove("invalid");
  }

  function clearErrors() {
    for (const c of choices) clearError(c.field);
    general.textContent = "";
  }

  return {
    /** Shows the picker with these choices and this (valid) selection. */
    setChoices(nextChoices, nextSelection) {
      choices = nextChoices;
      const r = reconcile(choices, nextSelection || {});
      selection = r.selection;
      blocked = r.blocked;
      render();
    },
    get selection() {
      return { ...selection };
    },
    get ready() {
      return choices.length > 0;
    },
    setBusy(busy) {
      form.setAttribute("aria-busy", busy ? "true" : "false");
      launchBtn.disabled = busy || blocked.length > 0;
      launchBtn.textContent = busy ? "Launching…" : "Launch";
    },
    /** Shows an error next to its field (or above Launch) and moves focus there. */
    showError(err) {
      const field = err.field && byId(`choice-${err.field}`) ? err.field : null;
      if (field) {
        byId(`error-${field}`).textContent = err.message;
        const fs = byId(`choice-${field}`);
        fs.classList.add("invalid");
        fs.scrollIntoView({ block: "center", behavior: "smooth" });
        (fs.querySelector("input:checked:not(:disabled)") || fs.querySelector("input:not(:disabled)"))?.focus();
      }
      general.dataset.kind = "error";
      general.textContent = field
        ? `Launch failed: ${err.message} (see “${choices.find((c) => c.field === field)?.label || field}”).`
        : `Launch failed: ${err.message}`;
      if (!field) launchBtn.focus();
    },
    clearErrors,
  };
}
