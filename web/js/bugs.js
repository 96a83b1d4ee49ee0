// Report a bug: title and description → POST /api/bugs; the server keeps the session's stack
// and its last requests with the report.

import { byId, fieldError } from "./dom.js";

const FIELDS = { title: "bug-title", description: "bug-description" };

/**
 * @param {{request: Function, announce: Function}} ctx
 */
export function createBugs(ctx) {
  const form = byId("bug-form");
  const done = byId("bug-confirmation");

  function clear() {
    for (const id of Object.values(FIELDS)) fieldError(byId(id), byId(`${id}-error`), "");
    byId("bug-error").textContent = "";
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear();
    done.textContent = "";
    const title = byId("bug-title").value.trim();
    const description = byId("bug-description").value.trim();
    if (!title) {
      fieldError(byId("bug-title"), byId("bug-title-error"), "Give the report a title.");
      byId("bug-title").focus();
      return;
    }
    const btn = byId("send-report");
    btn.disabled = true;
    btn.setAttribute("aria-busy", "true");
    try {
      const answer = await ctx.request("POST", "/api/bugs", { body: { title, description } });
      if (answer.error) {
        if (answer.status === 401 || answer.status === 410) return;
        const id = FIELDS[answer.error.field];
        if (id) {
          fieldError(byId(id), byId(`${id}-error`), answer.error.message);
          byId(id).focus();
        } else {
          byId("bug-error").textContent = `The report was not sent: ${answer.error.message}`;
        }
        return;
      }
      const id = answer.data?.id;
      done.textContent = `Thank you: report ${id !== undefined ? `#${id} ` : ""}was filed with your stack and your last requests.`;
      done.dataset.reportId = id !== undefined ? String(id) : "";
      form.reset();
      done.focus();
    } finally {
      btn.disabled = false;
      btn.removeAttribute("aria-busy");
    }
  });

  return {
    reset() {
      clear();
      form.reset();
      done.textContent = "";
    },
    show() {},
    hide() {},
    stop() {},
  };
}
