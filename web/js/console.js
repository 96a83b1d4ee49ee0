// Console: add, search, read, update and delete users and verify a password, over the session's
// own protocol (REST or GraphQL). Each action shows the request it sent, the answer, the
// stored_password, the cache outcome (x-stacklab-cache), the member that answered and its
// runtime, and the Server-Timing breakdown as a timing bar.

import { h, byId, fill, statusBadge, cacheBadge, fieldError } from "./dom.js";
import { buildRequest, readResult, describeRequest } from "./lib/users.js";
import { breakdownFromHeader } from "./lib/timing.js";
import { formatMs, prettyJson, formatClock } from "./lib/format.js";
import { runtimeOfMember, runtimeLabel } from "./lib/runtimes.js";
import { timingBar } from "./timingbar.js";

const TITLES = {
  create: "Add user",
  search: "Search",
  get: "Get user",
  update: "Update",
  delete: "Delete",
  verify: "Verify password",
};

// Where a server error's field is shown, per form.
const FIELD_INPUTS = {
  add: { username: "new-username", email: "new-email", password: "new-password", full_name: "new-full-name" },
  search: { q: "search-q", limit: "search-limit", offset: "search-offset" },
  user: { id: "user-id", username: "edit-username", email: "edit-email", password: "edit-password", full_name: "edit-full-name" },
  verify: { id: "user-id", password: "verify-password-input" },
};
const ALL_INPUTS = [...new Set(Object.values(FIELD_INPUTS).flatMap((m) => Object.values(m)))];

function val(id) {
  return byId(id).value;
}

/** The protocol the browser used for a URL, from Resource Timing ("h2", "h3", "http/1.1"). */
function negotiated(path) {
  try {
    const url = new URL(path, location.href).href;
    const entries = performance.getEntriesByName(url);
    const last = entries[entries.length - 1];
    return last && last.nextHopProtocol ? last.nextHopProtocol : "";
  } catch {
    return "";
  }
}

/**
 * @param {{request: Function, announce: (msg: string) => void, protocol: () => string,
 *   onDataRequest: () => void, choices: () => object[]}} ctx
 */
export function createConsole(ctx) {
  const rows = new Map(); // id → user
  const history = [];
  let listedOnce = false;

  function clearFieldErrors() {
    for (const id of ALL_INPUTS) fieldError(byId(id), byId(`${id}-error`), "");
  }

  function showFieldError(form, field, message) {
    const id = FIELD_INPUTS[form]?.[field];
    if (!id) return false;
    const input = byId(id);
    fieldError(input, byId(`${id}-error`), message);
    input.focus();
    return true;
  }

  function renderTable(total) {
    const body = byId("users-table").tBodies[0];
    const users = [...rows.values()].sort((a, b) => (Number(a.id) || 0) - (Number(b.id) || 0));
    fill(body, users.length === 0
      ? h("tr", null, h("td", { colspan: 6, class: "muted" }, "No users yet. Add one above."))
      : users.map((u) =>
        h("tr", { dataset: { userId: String(u.id), testid: "user-row" }, class: String(u.id) === val("user-id") ? "selected" : null },
          h("td", { class: "num" }, String(u.id)),
          h("td", null, u.username),
          h("td", null, u.email),
          h("td", null, u.full_name || ""),
          h("td", { class: "stored" }, h("code", { dataset: { testid: "stored-password" } }, u.stored_password)),
          h("td", null, h("button", {
            type: "button",
            class: "small",
            "aria-label": `Open ${u.username}`,
            onclick: () => run("get", { id: u.id }, "user"),
          }, "Open")))));
    const shown = users.length;
    byId("users-summary").textContent = typeof total === "number" && total !== shown
      ? `Showing ${shown} of ${total} users.`
      : `${shown} user${shown === 1 ? "" : "s"}.`;
  }

  function selectUser(u) {
    byId("user-id").value = String(u.id);
    byId("edit-username").value = u.username || "";
    byId("edit-email").value = u.email || "";
    byId("edit-full-name").value = u.full_name || "";
    byId("edit-password").value = "";
    byId("verify-result").textContent = "";
    byId("selected-stored").textContent = u.stored_password || "";
    byId("selected-stored-row").hidden = !u.stored_password;
    for (const tr of byId("users-table").tBodies[0].rows) {
      tr.classList.toggle("selected", tr.dataset.userId === String(u.id));
    }
  }

  function renderExchange(x) {
    const { action, req, answer, result } = x;
    const shown = describeRequest(req);
    const hdr = answer.headers;
    const cache = hdr.get("x-stacklab-cache");
    const timing = hdr.get("server-timing");
    const member = hdr.get("x-stacklab-member");
    const runtime = runtimeOfMember(ctx.choices(), member);
    const requestId = hdr.get("x-request-id");
    const proto = negotiated(req.path);
    const b = breakdownFromHeader(timing);
    const stored = result?.user?.stored_password;
    const article = h("article", { class: "exchange", dataset: { testid: "exchange", action, status: String(answer.status), cache: cache || "" } },
      h("header", { class: "exchange-head" },
        h("h4", null, `${TITLES[action]} `, h("span", { class: "muted" }, `at ${formatClock(x.at)}`)),
        statusBadge(answer.status),
        cacheBadge(cache),
        member ? h("span", { class: "badge" }, `answered by ${member}`) : null,
        runtime
          ? h("span", {
            class: "badge runtime",
            title: `${member} is an instance of the ${runtime.value} pool`,
            dataset: { testid: "exchange-runtime", runtime: runtime.value },
          }, runtimeLabel(runtime))
          : null,
        proto ? h("span", { class: "badge", dataset: { testid: "exchange-protocol" } }, `over ${proto}`) : null,
        h("span", { class: "badge" }, `${formatMs(answer.ms)} in the browser`)),
      h("div", { class: "exchange-grid" },
        h("section", null,
          h("h5", null, "Request"),
          h("pre", { class: "code", dataset: { testid: "exchange-request" } }, shown.line + (shown.body ? `\n\n${shown.body}` : ""))),
        h("section", null,
          h("h5", null, "Answer"),
          h("pre", { class: "code", dataset: { testid: "exchange-response" } },
            answer.text ? prettyJson(answer.text) : answer.status === 0 ? answer.error?.message : "(empty)"))),
      stored !== undefined && stored !== null
        ? h("p", { class: "stored-line" }, "stored_password — exactly what the database holds: ",
          h("code", { class: "stored", dataset: { testid: "exchange-stored-password" } }, stored))
        : null,
      answer.error ? h("p", { class: "error", dataset: { testid: "exchange-error" } }, answer.error.message) : null,
      b.present
        ? timingBar(b, { caption: "Server-Timing", testid: "exchange-timing" })
        : h("p", { class: "muted" }, "No Server-Timing header on this answer."),
      requestId ? h("p", { class: "muted small" }, `request id ${requestId} — find it in the Inspector`) : null);

    const current = byId("exchange-body");
    const previous = current.firstElementChild;
    if (previous && previous.tagName === "ARTICLE") {
      history.unshift(previous);
      if (history.length > 10) history.length = 10;
      fill(byId("history-list"), history.map((a) => h("li", null, a)));
      byId("history-count").textContent = String(history.length);
    }
    fill(current, article);
  }

  const RESULT_LINES = { create: "add-result", get: "user-result", update: "user-result", delete: "user-result" };

  /** A one-line outcome next to the button, so the answer is seen without scrolling. */
  function resultLine(action, answer) {
    const id = RESULT_LINES[action];
    if (!id) return;
    const el = byId(id);
    const cache = answer.headers.get("x-stacklab-cache");
    const parts = [answer.status === 0 ? "no answer" : `${answer.status}`];
    if (cache) parts.push(`cache ${cache}`);
    parts.push(formatMs(answer.ms));
    el.textContent = `${TITLES[action]}: ${parts.join(" · ")}${answer.error ? ` — ${answer.error.message}` : ""} (details under “Last request”)`;
    el.className = `action-result ${answer.error ? "bad" : "good"}`;
  }

  const BUTTONS = { create: "add-user", search: "search", get: "get-user", update: "update-user", delete: "delete-user", verify: "verify-password" };

  async function run(action, args, form) {
    clearFieldErrors();
    const protocol = ctx.protocol();
    let req;
    try {
      req = buildRequest(protocol, action, args);
    } catch (e) {
      if (!(e.field && showFieldError(form, e.field, e.message))) ctx.announce(e.message);
      return;
    }
    const btn = byId(BUTTONS[action]);
    btn.disabled = true;
    btn.setAttribute("aria-busy", "true");
    const at = Date.now();
    try {
      const answer = await ctx.request(req.method, req.path, { body: req.body });
      if (answer.error && (answer.status === 401 || answer.status === 410)) return; // the dialog says it
      let result = null;
      if (!answer.error) result = readResult(protocol, action, answer.data);
      renderExchange({ action, req, answer, result, at });
      resultLine(action, answer);
      if (answer.status !== 0) ctx.onDataRequest();
      if (answer.error) {
        const e = answer.error;
        if (!(e.field && showFieldError(form, e.field, e.message))) {
          byId("console-error").textContent = `${TITLES[action]} failed: ${e.message}`;
        }
        ctx.announce(`${TITLES[action]} failed: ${e.message}`);
        if (action === "get" && answer.status === 404) rows.delete(String(args.id)) && renderTable();
        return;
      }
      byId("console-error").textContent = "";
      apply(action, args, result);
    } finally {
      btn.disabled = false;
      btn.removeAttribute("aria-busy");
    }
  }

  function apply(action, args, result) {
    switch (action) {
      case "search":
        rows.clear();
        for (const u of result.users) rows.set(String(u.id), u);
        renderTable(result.total);
        ctx.announce(`Search found ${result.total} user${result.total === 1 ? "" : "s"}.`);
        break;
      case "create":
      case "get":
      case "update": {
        const u = result.user;
        if (!u) break;
        rows.set(String(u.id), u);
        renderTable();
        selectUser(u);
        if (action === "create") {
          byId("add-user-form").reset();
          ctx.announce(`Added ${u.username} (id ${u.id}).`);
        } else if (action === "update") {
          ctx.announce(`Updated ${u.username}.`);
        } else {
          ctx.announce(`Read ${u.username}.`);
        }
        break;
      }
      case "delete":
        rows.delete(String(args.id));
        renderTable();
        byId("user-form").reset();
        byId("selected-stored-row").hidden = true;
        ctx.announce(`Deleted user ${args.id}.`);
        break;
      case "verify": {
        const el = byId("verify-result");
        el.textContent = result.verified ? "✓ The password matches." : "✗ The password does not match.";
        el.className = result.verified ? "good" : "bad";
        el.dataset.ok = String(result.verified);
        break;
      }
      default:
    }
  }

  byId("add-user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run("create", {
      username: val("new-username"),
      email: val("new-email"),
      password: val("new-password"),
      full_name: val("new-full-name"),
    }, "add");
  });
  byId("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run("search", { q: val("search-q"), limit: val("search-limit"), offset: val("search-offset") }, "search");
  });
  byId("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run("update", {
      id: val("user-id"),
      username: val("edit-username"),
      email: val("edit-email"),
      full_name: val("edit-full-name"),
      password: val("edit-password"),
    }, "user");
  });
  byId("get-user").addEventListener("click", () => run("get", { id: val("user-id") }, "user"));
  byId("delete-user").addEventListener("click", () => run("delete", { id: val("user-id") }, "user"));
  byId("verify-password").addEventListener("click", () =>
    run("verify", { id: val("user-id"), password: val("verify-password-input") }, "verify"));

  return {
    /** A new session: empty tables, the protocol named. */
    reset(session) {
      rows.clear();
      history.length = 0;
      listedOnce = false;
      renderTable();
      fill(byId("exchange-body"), h("p", { class: "muted" }, "Nothing sent yet: add a user or search."));
      fill(byId("history-list"));
      byId("history-count").textContent = "0";
      byId("user-form").reset();
      byId("add-user-form").reset();
      byId("selected-stored-row").hidden = true;
      byId("verify-result").textContent = "";
      byId("add-result").textContent = "";
      byId("user-result").textContent = "";
      byId("console-error").textContent = "";
      clearFieldErrors();
      const p = session?.stack?.protocol === "graphql" ? "GraphQL" : "REST";
      byId("console-protocol").textContent = p;
      byId("console").dataset.protocol = session?.stack?.protocol || "rest";
    },
    show() {
      if (!listedOnce) {
        listedOnce = true;
        run("search", { q: "", limit: val("search-limit"), offset: val("search-offset") }, "search");
      }
    },
    hide() {},
    stop() {},
  };
}
