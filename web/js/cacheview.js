// Cache: the engine and policy in force, a button per policy the engine has (disabled with the
// server's reason where it cannot change), hits/misses/evictions/memory, the most recent items
// with their time to live and size, and "Flush cache". Live from the `cache` event; polled every
// 2 s while shown when the event stream is not open.

import { h, byId, fill, pair } from "./dom.js";
import { formatBytes, formatCount, formatPercent, formatTtl } from "./lib/format.js";
import { poller } from "./poll.js";

/**
 * @param {{api: Function, request: Function, announce: Function, isLive: () => boolean}} ctx
 */
export function createCacheView(ctx) {
  let view = null;
  let receivedAt = 0;
  let refusal = ""; // the last 409 message: the policy cannot change
  let policyKey = "";
  let visible = false;
  const poll = poller(load, 2000, { when: () => !ctx.isLive() });
  let ticker = null;

  async function load() {
    const answer = await ctx.request("GET", "/api/cache");
    if (answer.error) {
      if (answer.status !== 401 && answer.status !== 410) {
        byId("cache-error").textContent = `The cache could not be read: ${answer.error.message}`;
      }
      return;
    }
    byId("cache-error").textContent = "";
    update(answer.data);
  }

  function update(data) {
    if (!data || typeof data !== "object") return;
    view = data;
    receivedAt = Date.now();
    render();
  }

  function render() {
    if (!view) return;
    const policies = Array.isArray(view.policies) ? view.policies : [];
    const changeable = view.changeable !== false && !refusal && policies.length > 0;
    byId("cache-engine").textContent = view.engine ?? "–";
    byId("cache-policy").textContent = view.policy ?? "–";
    const reason = !changeable ? refusal || view.note || "this cache's policy cannot be changed" : "";
    // Redraw the buttons only when they change, so a focused button keeps its focus.
    const key = JSON.stringify([policies, view.policy, changeable]);
    if (key !== policyKey) {
      policyKey = key;
      fill(byId("cache-policies"), policies.length === 0
        ? h("p", { class: "muted" }, "This cache has no eviction policies to choose from.")
        : policies.map((p) =>
          h("button", {
            type: "button",
            class: p === view.policy ? "policy current" : "policy",
            "aria-pressed": p === view.policy ? "true" : "false",
            disabled: !changeable,
            "aria-describedby": "cache-policy-note",
            dataset: { policy: p },
            onclick: () => setPolicy(p),
          }, p)));
    }
    const note = byId("cache-policy-note");
    note.textContent = changeable ? view.note || "" : `Cannot change: ${reason}`;
    note.classList.toggle("warn", !changeable);

    const st = view.stats || {};
    const lookups = (st.hits || 0) + (st.misses || 0);
    fill(byId("cache-stats"),
      pair("hits", formatCount(st.hits), { dataset: { stat: "hits" } }),
      pair("misses", formatCount(st.misses), { dataset: { stat: "misses" } }),
      pair("hit ratio", lookups ? formatPercent(st.hits / lookups) : "–", { dataset: { stat: "hit_ratio" } }),
      pair("evictions", formatCount(st.evictions), { dataset: { stat: "evictions" } }),
      pair("memory", [
        `${formatBytes(st.bytes)}${st.max_bytes ? ` of ${formatBytes(st.max_bytes)}` : ""}`,
        st.max_bytes
          ? h("meter", { min: "0", max: String(st.max_bytes), value: String(Math.min(st.bytes || 0, st.max_bytes)), "aria-label": "cache memory used" })
          : null,
      ], { dataset: { stat: "bytes" } }));
    renderItems();
  }

  function renderItems() {
    const items = Array.isArray(view?.items) ? view.items : [];
    const elapsed = Date.now() - receivedAt;
    const body = byId("cache-items").tBodies[0];
    fill(body, items.length === 0
      ? h("tr", null, h("td", { colspan: 4, class: "muted" }, "The cache is empty. Read a user in the Console to fill it."))
      : items.map((it) =>
        h("tr", { dataset: { testid: "cache-item", key: it.key } },
          h("td", null, h("code", null, it.key)),
          h("td", { class: "num" }, formatTtl(typeof it.ttl_ms === "number" ? it.ttl_ms - elapsed : it.ttl_ms)),
          h("td", { class: "num" }, formatBytes(it.bytes)),
          h("td", { class: "preview" }, h("code", null, it.value_preview ?? "")))));
    byId("cache-count").textContent = `${items.length} item${items.length === 1 ? "" : "s"} (most recent first, at most 20)`;
  }

  async function setPolicy(p) {
    const answer = await ctx.request("PUT", "/api/cache/policy", { body: { policy: p } });
    if (answer.error) {
      if (answer.status === 409) {
        refusal = answer.error.message;
        render();
        byId("cache-policy-note").focus();
      }
      if (answer.status !== 401 && answer.status !== 410) {
        byId("cache-error").textContent = `The policy stays ${view?.policy}: ${answer.error.message}`;
        ctx.announce(`The policy was not changed: ${answer.error.message}`);
      }
      return;
    }
    byId("cache-error").textContent = "";
    update(answer.data);
    byId("cache-policies").querySelector(`[data-policy="${CSS.escape(p)}"]`)?.focus();
    ctx.announce(`Eviction policy is now ${answer.data?.policy ?? p}.`);
  }

  byId("cache-flush").addEventListener("click", async () => {
    const btn = byId("cache-flush");
    btn.disabled = true;
    try {
      const answer = await ctx.request("DELETE", "/api/cache");
      if (answer.error) {
        if (answer.status !== 401 && answer.status !== 410) {
          byId("cache-error").textContent = `Flush failed: ${answer.error.message}`;
        }
        return;
      }
      byId("cache-error").textContent = "";
      if (answer.data && typeof answer.data === "object" && "items" in answer.data) update(answer.data);
      else await load();
      ctx.announce("The cache was flushed.");
    } finally {
      btn.disabled = false;
    }
  });
  byId("cache-refresh").addEventListener("click", () => load());

  return {
    reset() {
      view = null;
      refusal = "";
      policyKey = "";
      fill(byId("cache-policies"));
      fill(byId("cache-stats"));
      fill(byId("cache-items").tBodies[0]);
      byId("cache-policy-note").textContent = "";
      byId("cache-error").textContent = "";
      byId("cache-engine").textContent = "–";
      byId("cache-policy").textContent = "–";
      byId("cache-count").textContent = "";
    },
    show() {
      visible = true;
      load();
      poll.start({ now: false });
      clearInterval(ticker);
      ticker = setInterval(() => visible && view && renderItems(), 1000);
    },
    hide() {
      visible = false;
      poll.stop();
      clearInterval(ticker);
    },
    stop() {
      this.hide();
    },
    /** The `cache` event: the same body as GET /api/cache. */
    onEvent(data) {
      update(data);
    },
  };
}
