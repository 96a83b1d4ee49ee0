// Inspector: this session's captured requests, newest first, live from the `request` event (or
// polled every 2 s while shown when the stream is not open). Each row shows method, path,
// the protocol the browser actually negotiated, status, cache outcome and total time;
// selecting one shows the member that answered and its runtime, its headers, body and a timing
// bar of proxy, backend, cache and database.

import { h, byId, fill, statusBadge, cacheBadge, pair } from "./dom.js";
import { mergeRequests, isWatching } from "./lib/state.js";
import { breakdownFromCapture } from "./lib/timing.js";
import { formatMs, formatClock, prettyJson } from "./lib/format.js";
import { runtimeOfMember, runtimeLabel } from "./lib/runtimes.js";
import { timingBar } from "./timingbar.js";
import { poller } from "./poll.js";

const MAX = 100;
const keyOf = (r) => r.request_id ?? `${r.at_unix_ms}|${r.method}|${r.path}`;

/**
 * @param {{request: Function, isLive: () => boolean, choices: () => object[]}} ctx
 */
export function createInspector(ctx) {
  let requests = [];
  let selected = null;
  const items = new Map(); // key → <li>
  const poll = poller(load, 2000, { when: () => !ctx.isLive() });

  async function load() {
    const answer = await ctx.request("GET", "/api/requests?limit=50");
    if (answer.error) {
      if (answer.status !== 401 && answer.status !== 410) {
        byId("inspector-error").textContent = `Captured requests could not be read: ${answer.error.message}`;
      }
      return;
    }
    byId("inspector-error").textContent = "";
    const list = Array.isArray(answer.data?.requests) ? answer.data.requests : Array.isArray(answer.data) ? answer.data : [];
    add(list);
  }

  function row(r) {
    const key = keyOf(r);
    const path = r.query ? `${r.path}?${r.query}` : r.path;
    return h("li", {
      dataset: { testid: "inspector-row", key, protocol: r.protocol || "", status: String(r.status ?? ""), watching: String(isWatching(r)) },
      hidden: hideWatching() && isWatching(r),
    },
      h("button", {
        type: "button",
        class: "req",
        "aria-current": key === selected ? "true" : "false",
        title: `${r.method} ${path}`,
        onclick: () => select(key),
      },
      h("span", { class: "req-method" }, r.method),
      h("span", { class: "req-path" }, path),
      h("span", { class: "badge proto", dataset: { testid: "protocol" } }, r.protocol || "?"),
      statusBadge(r.status ?? 0),
      r.cache ? cacheBadge(r.cache) : null,
      h("span", { class: "req-ms" }, formatMs(r.total_ms))));
  }

  /** Takes requests in; only new rows are inserted (at the top) so focus stays where it is. */
  function add(incoming) {
    requests = mergeRequests(requests, incoming, MAX);
    const list = byId("inspector-list");
    const keep = new Set(requests.map(keyOf));
    for (const [key, li] of items) {
      if (!keep.has(key)) {
        li.remove();
        items.delete(key);
      }
    }
    for (const r of requests) {
      const key = keyOf(r);
      if (!items.has(key)) {
        const li = row(r);
        items.set(key, li);
        list.append(li);
      }
    }
    // Rows in the order of `requests` (newest first): only rows out of place move, and those
    // are the new ones, so a focused row stays put.
    let i = 0;
    for (const r of requests) {
      const li = items.get(keyOf(r));
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
      i += 1;
    }
    counts();
  }

  const hideWatching = () => byId("inspector-hide-watching").checked;

  function counts() {
    const shown = requests.filter((r) => !(hideWatching() && isWatching(r))).length;
    byId("inspector-empty").hidden = shown > 0;
    byId("inspector-count").textContent = shown === requests.length
      ? `${shown} request${shown === 1 ? "" : "s"}`
      : `${shown} shown of ${requests.length}`;
  }

  byId("inspector-hide-watching").addEventListener("change", () => {
    for (const r of requests) {
      const li = items.get(keyOf(r));
      if (li) li.hidden = hideWatching() && isWatching(r);
    }
    counts();
  });

  function select(key) {
    selected = key;
    for (const [k, li] of items) li.querySelector("button").setAttribute("aria-current", k === key ? "true" : "false");
    const r = requests.find((x) => keyOf(x) === key);
    if (!r) return;
    const headers = Array.isArray(r.headers) ? r.headers : [];
    const runtime = runtimeOfMember(ctx.choices(), r.member);
    const detail = byId("inspector-detail");
    fill(detail,
      h("h3", { id: "inspector-detail-title", tabindex: "-1" }, `${r.method} ${r.path}${r.query ? `?${r.query}` : ""}`),
      h("p", null, statusBadge(r.status ?? 0), " ", r.cache ? cacheBadge(r.cache) : null, " ",
        h("span", { class: "badge proto" }, `over ${r.protocol || "?"}`)),
      h("dl", { class: "facts" },
        pair("at", formatClock(r.at_unix_ms)),
        pair("request id", r.request_id ?? "–"),
        pair("answered by", r.member ?? "the proxy itself", { dataset: { testid: "inspector-member" } }),
        runtime ? pair("runtime", runtimeLabel(runtime), { dataset: { testid: "inspector-runtime", runtime: runtime.value } }) : null,
        pair("total", formatMs(r.total_ms)),
        pair("upstream", formatMs(r.upstream_ms)),
        pair("proxy", formatMs(r.proxy_ms)),
        r.server_timing ? pair("Server-Timing", h("code", null, r.server_timing)) : null),
      timingBar(breakdownFromCapture(r), { caption: "Where the time went", testid: "inspector-timing" }),
      h("h4", null, "Request headers"),
      headers.length === 0
        ? h("p", { class: "muted" }, "none captured")
        : h("div", { class: "table-wrap" }, h("table", { class: "headers", dataset: { testid: "inspector-headers" } },
          h("thead", null, h("tr", null, h("th", { scope: "col" }, "name"), h("th", { scope: "col" }, "value"))),
          h("tbody", null, headers.map((pairv) => {
            const [name, value] = Array.isArray(pairv) ? pairv : [pairv?.name, pairv?.value];
            return h("tr", null, h("td", null, h("code", null, String(name))), h("td", null, h("code", null, String(value ?? ""))));
          })))),
      h("h4", null, "Request body"),
      r.body === null || r.body === undefined || r.body === ""
        ? h("p", { class: "muted" }, r.body === null ? "no body (or it was streamed, not held)" : "empty")
        : h("pre", { class: "code", dataset: { testid: "inspector-body" } }, prettyJson(r.body)),
      r.body_truncated ? h("p", { class: "muted" }, "The body was cut at the capture limit.") : null);
    detail.querySelector("h3").focus({ preventScroll: true });
    if (window.matchMedia("(max-width: 800px)").matches) detail.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  return {
    reset() {
      requests = [];
      selected = null;
      items.clear();
      fill(byId("inspector-list"));
      fill(byId("inspector-detail"), h("p", { class: "muted" }, "Select a request to see its headers, body and timing."));
      counts();
      byId("inspector-error").textContent = "";
    },
    show() {
      load();
      poll.start({ now: false });
    },
    hide() {
      poll.stop();
    },
    stop() {
      poll.stop();
    },
    /** The `request` event: one captured request. */
    onEvent(data) {
      if (data && typeof data === "object") add([data]);
    },
  };
}
