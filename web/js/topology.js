// Topology: proxy → pools → instances → this session's database and cache, refreshed every
// second while shown. Each runtime's pool is named after it and labelled with the runtime
// (the pool serving the session first, marked "your session"). Each instance says what it
// runs as (a process, a Docker container, or external: not control's).
//
// Shared pools serve every session, so nobody may break them from here. Where the install
// allows drills ("drills": true), "Start a drill" asks for a drill pool: instances of the
// session's runtime started for it alone (POST /api/topology/drill), which then serve it; on
// that pool only, "Kill instance" per instance and "Add instance" (a process or — where
// /api/options shows Docker available — a container); "End the drill" goes back to the shared
// pool. And, always, "Start traffic": GET /api/users?limit=1 at a steady 20 per second, counted
// (sent, ok, failed), so a person can watch a failover happen with no failed request.

import { h, byId, fill } from "./dom.js";
import {
  normalizeTopology, orderPools, stateText, addInstancePath, killInstancePath, memberChanges,
  canKill, canAdd, shapeKey, kindText, kindDescription, containerOffer, INSTANCE_KINDS,
  drillOffer, isOwnDrill, DRILL_PATH,
} from "./lib/topology.js";
import { runtimeOfPool, runtimeLabel } from "./lib/runtimes.js";
import { newCounters, started, finished, due, answerOk } from "./lib/traffic.js";
import { formatCount, formatMs } from "./lib/format.js";
import { poller } from "./poll.js";

const RATE = 20; // requests per second

/**
 * @param {{request: Function, announce: Function, choices: () => object[]}} ctx
 */
export function createTopology(ctx) {
  let topo = null;
  let lastKey = "";
  let lastShape = "";
  // The kind of instance "Add instance" starts, per pool (kept across redraws).
  const kindFor = new Map();
  const poll = poller(load, 1000);

  async function load() {
    const answer = await ctx.request("GET", "/api/topology");
    if (answer.error) {
      if (answer.status !== 401 && answer.status !== 410) {
        byId("topology-error").textContent = `The topology could not be read: ${answer.error.message}`;
      }
      return;
    }
    byId("topology-error").textContent = "";
    const next = normalizeTopology(answer.data);
    if (topo) {
      const ch = memberChanges(topo, next);
      const said = [
        ...ch.added.map((k) => `${k} joined`),
        ...ch.removed.map((k) => `${k} left`),
        ...ch.changed.map((c) => `${c.key} is now ${c.to}`),
      ];
      if (said.length) byId("topology-status").textContent = `${said.join("; ")}.`;
    }
    topo = next;
    render();
  }

  function render() {
    if (!topo) return;
    const key = JSON.stringify(topo);
    if (key === lastKey) return;
    lastKey = key;
    // The diagram is rebuilt only when its shape changes (a member comes or goes, ...). Load
    // and health change every second while traffic runs: those are written into the nodes in
    // place, so a button being pressed (or focused) is not swapped for a new one under the
    // pointer, which would lose the click.
    const shape = shapeKey(topo);
    if (shape !== lastShape) {
      lastShape = shape;
      rebuild();
    }
    for (const p of topo.pools) {
      const summary = byId(`pool-${p.name}-summary`);
      if (summary) summary.textContent = ` · ${p.algorithm} · ${p.healthy}/${p.members.length} healthy`;
      for (const m of p.members) {
        const li = byId(`member-${p.name}-${m.id}`);
        if (!li) continue;
        li.className = `member state-${m.state}`;
        li.dataset.state = m.state;
        li.querySelector(".member-state").textContent = stateText(m);
        li.querySelector(".member-load").textContent =
          `in flight ${formatCount(m.in_flight)} · EWMA ${formatMs(m.ewma_ms)}`
          + (m.requests !== null ? ` · ${formatCount(m.requests)} requests` : "");
      }
    }
  }

  function rebuild() {
    const focusedId = document.activeElement?.id;
    const sess = topo.session;
    const pools = orderPools(topo);
    fill(byId("topology-diagram"),
      h("div", { class: "tier", dataset: { tier: "proxy" } },
        h("h3", { class: "tier-title" }, "Proxy"),
        h("div", { class: "node proxy", dataset: { testid: "node-proxy" } },
          h("b", null, "edge proxy"),
          h("span", null, topo.proxy.addr || ""),
          h("span", { class: "muted" }, topo.proxy.protocols.join(" · ")))),
      h("div", { class: "arrow", "aria-hidden": "true" }),
      h("div", { class: "tier", dataset: { tier: "pools" } },
        h("h3", { class: "tier-title" }, "Pools and instances"),
        pools.length === 0 ? h("p", { class: "muted" }, "No pools reported.") : null,
        pools.map((p) => {
          const titleId = `pool-${p.name}-title`;
          const own = isOwnDrill(topo, p);
          const runtime = runtimeOfPool(ctx.choices?.() || [], own ? sess.runtimePool : p.name);
          const offer = drillOffer(topo);
          return h("section", {
            class: ["pool", sess?.pool === p.name ? "mine" : null],
            "aria-labelledby": titleId,
            dataset: { testid: "pool", pool: p.name },
          },
          h("h4", { id: titleId },
            `${p.name}`,
            runtime
              ? h("span", { class: "badge runtime", dataset: { testid: "pool-runtime", runtime: runtime.value } },
                runtimeLabel(runtime))
              : null,
            h("span", { class: "muted", id: `pool-${p.name}-summary` }),
            sess?.pool === p.name ? h("span", { class: "badge good" }, "your session") : null,
            own ? h("span", { class: "badge drill", dataset: { testid: "drill-badge" } }, "drill: started for you alone") : null),
          own
            ? h("p", { class: "muted drill-note" },
              "These instances serve only your session: kill one under traffic and watch the requests fail over. ",
              h("button", { type: "button", class: "small", id: "drill-end", onclick: (e) => endDrill(e.currentTarget) }, "End the drill"))
            : null,
          !own && sess?.pool === p.name && offer.offer
            ? h("p", { class: "muted drill-note" },
              `Shared by every session, so it cannot be changed from here. A drill starts ${topo.drillLimits.instances} instances of this runtime for your session alone. `,
              h("button", {
                type: "button",
                class: "small",
                id: "drill-start",
                disabled: !offer.enabled,
                "aria-describedby": offer.enabled ? titleId : "drill-start-why",
                onclick: (e) => startDrill(e.currentTarget),
              }, "Start a drill"),
              offer.enabled ? null : h("span", { class: "opt-why", id: "drill-start-why" }, ` Not available: ${offer.reason}`))
            : null,
          h("ul", { class: "members" }, p.members.map((m) => {
            const mid = `member-${p.name}-${m.id}`;
            const pinned = sess?.member === m.id;
            return h("li", { class: "member", id: mid, dataset: { testid: "member", member: m.id, pinned: pinned ? "true" : "false" } },
              h("span", { class: "member-head" },
                h("span", { class: "member-id", id: `${mid}-name` }, m.id),
                kindText(m.kind)
                  ? h("span", {
                    class: `badge kind kind-${m.kind}`,
                    title: kindDescription(m.kind),
                    dataset: { testid: "member-kind", kind: m.kind },
                  }, h("span", { class: "kind-icon", "aria-hidden": "true" }, m.kind === "container" ? "▣" : m.kind === "process" ? "⚙" : "↗"),
                  h("span", { class: "visually-hidden" }, "runs as "), kindText(m.kind))
                  : null),
              pinned ? h("span", { class: "badge", title: "its in-process cache holds your session's entries" }, "serves your session") : null,
              h("span", { class: "member-state" }),
              h("span", { class: "muted" }, m.addr),
              h("span", { class: "member-load" }),
              topo.drills && canKill(topo, p, m)
                ? h("button", {
                  type: "button",
                  class: "danger small",
                  id: `kill-${p.name}-${m.id}`,
                  "aria-describedby": `${mid}-name`,
                  onclick: (e) => kill(p.name, m.id, e.currentTarget),
                }, "Kill instance")
                : null);
          })),
          topo.drills && canAdd(topo, p) ? addControls(p.name, titleId) : null);
        })),
      h("div", { class: "arrow", "aria-hidden": "true" }),
      h("div", { class: "tier", dataset: { tier: "stores" } },
        h("h3", { class: "tier-title" }, "Your data"),
        sess
          ? [
            h("div", { class: "node db", dataset: { testid: "node-database" } },
              h("b", null, `database: ${sess.database.engine || "?"}`), h("span", { class: "muted" }, sess.database.where)),
            h("div", { class: "node cache", dataset: { testid: "node-cache" } },
              h("b", null, `cache: ${sess.cache.engine || "?"}`), h("span", { class: "muted" }, sess.cache.where)),
          ]
          : h("p", { class: "muted" }, "No session in this answer.")));
    byId("drills-note").hidden = topo.drills;
    if (focusedId && byId(focusedId) && document.activeElement === document.body) byId(focusedId).focus();
  }

  /** "Add instance" for a pool: what the new instance runs as (a radio group), then the button. */
  function addControls(pool, titleId) {
    const offer = containerOffer(ctx.choices?.() || []);
    let kind = kindFor.get(pool) || "process";
    if (kind === "container" && !offer.available) kind = "process";
    const base = `add-${pool}`;
    return h("div", { class: "add-instance" },
      h("fieldset", { class: "kind-choice", id: `${base}-kind`, "aria-describedby": titleId },
        h("legend", null, "New instance runs as"),
        INSTANCE_KINDS.map((k) => {
          const id = `${base}-kind-${k}`;
          const off = k === "container" && !offer.available;
          return h("div", { class: ["kind-option", off ? "disabled" : null] },
            h("input", {
              type: "radio",
              name: `${base}-kind`,
              id,
              value: k,
              checked: k === kind,
              disabled: off,
              "aria-describedby": off ? `${id}-why` : null,
              onchange: () => kindFor.set(pool, k),
            }),
            h("label", { for: id }, k === "container" ? "Docker container" : "process"),
            off ? h("span", { class: "opt-why", id: `${id}-why` }, `Not available: ${offer.reason}`) : null);
        })),
      h("button", {
        type: "button",
        class: "small",
        id: base,
        "aria-describedby": titleId,
        onclick: (e) => addInstance(pool, e.currentTarget),
      }, "Add instance"));
  }

  async function addInstance(pool, btn) {
    const checked = document.querySelector(`input[name="add-${CSS.escape(pool)}-kind"]:checked`);
    const kind = checked ? checked.value : kindFor.get(pool) || "process";
    btn.disabled = true;
    const answer = await ctx.request("POST", addInstancePath(pool, kind), { body: {} });
    btn.disabled = false;
    const what = kind === "container" ? "a container instance" : "an instance";
    if (answer.error) {
      if (answer.status !== 401 && answer.status !== 410) {
        byId("topology-status").textContent = `Could not add ${what} to ${pool}: ${answer.error.message}`;
      }
      return;
    }
    const id = answer.data?.id;
    const ran = kindText(answer.data?.kind) || kind;
    byId("topology-status").textContent = `Started ${ran} instance ${id ?? ""} in ${pool}; it joins the pool once its health check passes.`;
    load();
  }

  async function startDrill(btn) {
    btn.disabled = true;
    byId("topology-status").textContent = "Starting instances for your drill…";
    const answer = await ctx.request("POST", DRILL_PATH, { body: {} });
    btn.disabled = false;
    if (answer.error) {
      if (answer.status !== 401 && answer.status !== 410) {
        byId("topology-status").textContent = `Could not start a drill: ${answer.error.message}`;
      }
      return;
    }
    const n = answer.data?.instances?.length ?? 0;
    byId("topology-status").textContent =
      `Drill pool ${answer.data?.pool ?? ""} started with ${n} instances; it serves your session now.`;
    load();
  }

  async function endDrill(btn) {
    btn.disabled = true;
    const answer = await ctx.request("DELETE", DRILL_PATH);
    btn.disabled = false;
    if (answer.error) {
      if (answer.status !== 401 && answer.status !== 410) {
        byId("topology-status").textContent = `Could not end the drill: ${answer.error.message}`;
      }
      return;
    }
    byId("topology-status").textContent = `Drill ended: your session is served by the shared ${answer.data?.pool ?? ""} pool again.`;
    load();
  }

  async function kill(pool, id, btn) {
    btn.disabled = true;
    const answer = await ctx.request("DELETE", killInstancePath(pool, id));
    if (answer.error) {
      btn.disabled = false;
      if (answer.status !== 401 && answer.status !== 410) {
        byId("topology-status").textContent = `Could not kill ${id}: ${answer.error.message}`;
      }
      return;
    }
    byId("topology-status").textContent = `Killed ${id} in ${pool}. Watch the traffic counters: requests fail over to the other instances.`;
    load();
  }

  // --- Traffic -------------------------------------------------------------------------------
  let counters = newCounters();
  let running = false;
  let startedAt = 0;
  let timer = null;
  const inflight = new Set();

  function drawCounters() {
    byId("traffic-sent").textContent = formatCount(counters.sent);
    byId("traffic-ok").textContent = formatCount(counters.ok);
    byId("traffic-failed").textContent = formatCount(counters.failed);
    byId("traffic-failed").closest(".counter")?.classList.toggle("bad", counters.failed > 0);
    byId("traffic-last-error").textContent = counters.lastError ? `last failure: ${counters.lastError}` : "";
  }

  async function one() {
    const ctrl = new AbortController();
    inflight.add(ctrl);
    counters = started(counters);
    try {
      const answer = await ctx.request("GET", "/api/users?limit=1", { signal: ctrl.signal });
      if (answer.status === 401 || answer.status === 410) {
        counters = finished(counters, { ok: false, error: answer.error?.message || `HTTP ${answer.status}` });
        stopTraffic();
        return;
      }
      counters = finished(counters, answerOk(answer.status)
        ? { ok: true }
        : { ok: false, error: answer.error?.message ? `HTTP ${answer.status}: ${answer.error.message}` : `HTTP ${answer.status}` });
    } catch (e) {
      counters = finished(counters, e && e.name === "AbortError" ? { aborted: true } : { ok: false, error: String(e?.message || e) });
    } finally {
      inflight.delete(ctrl);
    }
  }

  function tick() {
    if (!running) return;
    const n = due({ startedAt, now: performance.now(), rate: RATE, sent: counters.sent, inFlight: counters.inFlight });
    for (let i = 0; i < n; i++) one();
    drawCounters();
  }

  function startTraffic() {
    if (running) return;
    running = true;
    counters = newCounters();
    startedAt = performance.now();
    timer = setInterval(tick, 25);
    tick();
    const btn = byId("traffic-toggle");
    btn.textContent = "Stop traffic";
    btn.classList.add("running");
    byId("traffic").dataset.running = "true";
    byId("traffic-status").textContent = `Sending GET /api/users?limit=1, ${RATE} a second.`;
  }

  function stopTraffic() {
    if (!running) return;
    running = false;
    clearInterval(timer);
    timer = null;
    for (const c of inflight) c.abort();
    const btn = byId("traffic-toggle");
    btn.textContent = "Start traffic";
    btn.classList.remove("running");
    byId("traffic").dataset.running = "false";
    // The aborted ones settle on their own; draw once they have.
    setTimeout(() => {
      drawCounters();
      byId("traffic-status").textContent =
        `Traffic stopped: ${formatCount(counters.sent)} sent, ${formatCount(counters.ok)} ok, ${formatCount(counters.failed)} failed.`;
    }, 50);
  }

  byId("traffic-toggle").addEventListener("click", () => (running ? stopTraffic() : startTraffic()));

  return {
    reset() {
      stopTraffic();
      topo = null;
      lastKey = "";
      lastShape = "";
      counters = newCounters();
      drawCounters();
      fill(byId("topology-diagram"), h("p", { class: "muted" }, "Loading…"));
      byId("topology-status").textContent = "";
      byId("topology-error").textContent = "";
      byId("traffic-status").textContent = "";
    },
    show() {
      poll.start();
    },
    hide() {
      poll.stop();
    },
    /** The session ended or expired: no more traffic, no more polling. */
    stop() {
      poll.stop();
      stopTraffic();
    },
  };
}
