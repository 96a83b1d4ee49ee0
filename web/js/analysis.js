// Analysis: the database's size and rows, the cache's hit ratio (GET /api/analysis), and a
// benchmark run on demand (POST /api/analysis/benchmark {reads, writes}, each 1..2000 by
// default): p50/p95/p99 and ops/s for writes, database reads and cached reads, their latency
// distribution as an inline SVG chart, and the cost of hashing a password in each mode; which
// runtime (and instance) ran it; and every run of this page, across sessions, in one table so
// runtimes can be compared on the same stack.

import { h, s, byId, fill, pair, fieldError } from "./dom.js";
import { formatBytes, formatCount, formatMs, formatPercent, formatRate } from "./lib/format.js";
import { chartGeometry, barLengths } from "./lib/histogram.js";
import { benchRun, addRun, comparedStacks } from "./lib/benchruns.js";

const MAX_OPS = 2000; // backend limits.max_benchmark_ops default; the server's answer wins
const SERIES = [
  { key: "writes", name: "writes (database)", cls: "s-writes" },
  { key: "db_reads", name: "reads from the database", cls: "s-db" },
  { key: "cached_reads", name: "reads through the cache", cls: "s-cached" },
];

/**
 * @param {{request: Function, announce: Function, session: () => object, choices: () => object[]}} ctx
 */
export function createAnalysis(ctx) {
  // This page's benchmark runs, newest first; a new session keeps them (that is the point).
  let runs = [];

  async function loadOverview() {
    const answer = await ctx.request("GET", "/api/analysis");
    const box = byId("analysis-overview");
    if (answer.error) {
      if (answer.status !== 401 && answer.status !== 410) {
        fill(box, h("p", { class: "error" }, `Could not read the analysis: ${answer.error.message}`));
      }
      return;
    }
    const d = answer.data || {};
    const db = d.database || {};
    const cache = d.cache || {};
    const st = cache.stats || {};
    fill(box,
      h("div", { class: "stat-card" }, h("h3", null, "Database"),
        h("dl", { class: "facts" },
          pair("engine", db.engine ?? "–"),
          pair("size", formatBytes(db.size_bytes), { dataset: { testid: "db-size" } }),
          pair("rows", formatCount(db.rows), { dataset: { testid: "db-rows" } }))),
      h("div", { class: "stat-card" }, h("h3", null, "Cache"),
        h("dl", { class: "facts" },
          pair("engine", cache.engine ?? "–"),
          pair("hit ratio", formatPercent(cache.hit_ratio), { dataset: { testid: "hit-ratio" } }),
          pair("hits / misses", `${formatCount(st.hits)} / ${formatCount(st.misses)}`),
          pair("evictions", formatCount(st.evictions)),
          pair("memory", `${formatBytes(st.bytes)}${st.max_bytes ? ` of ${formatBytes(st.max_bytes)}` : ""}`))));
  }

  function readOps(id) {
    const input = byId(id);
    const n = Number(input.value);
    if (!Number.isInteger(n) || n < 1 || n > MAX_OPS) {
      fieldError(input, byId(`${id}-error`), `a whole number from 1 to ${MAX_OPS}`);
      return null;
    }
    fieldError(input, byId(`${id}-error`), "");
    return n;
  }

  byId("benchmark-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const reads = readOps("bench-reads");
    const writes = readOps("bench-writes");
    if (reads === null || writes === null) {
      byId(reads === null ? "bench-reads" : "bench-writes").focus();
      return;
    }
    const btn = byId("run-benchmark");
    btn.disabled = true;
    btn.setAttribute("aria-busy", "true");
    byId("benchmark-status").textContent = `Running ${writes} writes and ${reads} reads, then hashing in each mode…`;
    try {
      const answer = await ctx.request("POST", "/api/analysis/benchmark", { body: { reads, writes } });
      if (answer.error) {
        if (answer.status === 401 || answer.status === 410) return;
        const f = answer.error.field;
        if (f === "reads" || f === "writes") {
          const id = f === "reads" ? "bench-reads" : "bench-writes";
          fieldError(byId(id), byId(`${id}-error`), answer.error.message);
          byId(id).focus();
        }
        byId("benchmark-status").textContent = `The benchmark did not run: ${answer.error.message}`;
        return;
      }
      const run = benchRun({
        result: answer.data,
        stack: ctx.session()?.stack,
        member: answer.headers.get("x-stacklab-member"),
        choices: ctx.choices(),
        at: Date.now(),
      });
      runs = addRun(runs, run);
      renderResult(answer.data || {}, run);
      renderRuns();
      byId("benchmark-status").textContent = `Done in ${formatMs(answer.ms)}.`;
      ctx.announce("Benchmark finished.");
      loadOverview();
    } finally {
      btn.disabled = false;
      btn.removeAttribute("aria-busy");
    }
  });

  byId("analysis-refresh").addEventListener("click", () => loadOverview());

  function renderResult(d, run) {
    byId("benchmark-runtime").textContent = `Ran on ${run.runtimeLabel}${run.member ? `, instance ${run.member}` : ""}, ${run.stackLabel}.`;
    byId("benchmark-runtime").dataset.runtime = run.runtime;
    const rows = SERIES.filter((x) => d[x.key]);
    fill(byId("benchmark-table").tBodies[0], rows.map((x) => {
      const f = d[x.key];
      return h("tr", { dataset: { series: x.key } },
        h("th", { scope: "row" }, h("span", { class: `swatch ${x.cls}`, "aria-hidden": "true" }), x.name),
        h("td", { class: "num" }, formatCount(f.ops)),
        h("td", { class: "num" }, formatRate(f.ops_per_sec)),
        h("td", { class: "num" }, formatMs(f.p50_ms)),
        h("td", { class: "num" }, formatMs(f.p95_ms)),
        h("td", { class: "num" }, formatMs(f.p99_ms)));
    }));
    byId("benchmark-result").hidden = false;
    if (d.cache_engine === "none") {
      byId("benchmark-cache-note").textContent = "This stack has no cache: “reads through the cache” go to the database too.";
    } else {
      byId("benchmark-cache-note").textContent = d.cache_engine ? `Cache engine: ${d.cache_engine}.` : "";
    }
    drawChart(rows.map((x) => ({ ...x, samples: Array.isArray(d[x.key].samples_ms) ? d[x.key].samples_ms : [] })));
    drawHashing(Array.isArray(d.password_hashing) ? d.password_hashing : []);
  }

  function renderRuns() {
    const compared = new Set(comparedStacks(runs));
    byId("benchmark-runs").hidden = runs.length === 0;
    fill(byId("benchmark-runs-table").tBodies[0], runs.map((r) =>
      h("tr", {
        class: compared.has(r.stackKey) ? "compared" : null,
        dataset: { testid: "bench-run", runtime: r.runtime, stack: r.stackKey },
      },
      h("th", { scope: "row" }, r.runtimeLabel),
      h("td", null, r.stackLabel),
      h("td", { class: "num" }, formatMs(r.writeP50)),
      h("td", { class: "num" }, formatMs(r.dbP50)),
      h("td", { class: "num" }, formatMs(r.dbP99)),
      h("td", { class: "num" }, formatMs(r.cachedP50)),
      h("td", { class: "num" }, r.mode ? `${formatMs(r.hashMs)} (${r.mode})` : formatMs(r.hashMs)),
      h("td", null, h("code", null, r.member || "–")))));
  }

  function drawChart(series) {
    const g = chartGeometry(series, { width: 640, height: 260, bins: 28 });
    const box = byId("latency-chart");
    if (g.empty) {
      fill(box, h("p", { class: "muted" }, "No latency samples came back."));
      return;
    }
    const desc = series.map((x) => {
      const sorted = [...x.samples].sort((a, b) => a - b);
      return `${x.name}: ${x.samples.length} samples from ${formatMs(sorted[0])} to ${formatMs(sorted[sorted.length - 1])}`;
    }).join("; ");
    const svg = s("svg", {
      viewBox: `0 0 ${g.width} ${g.height}`,
      class: "chart",
      role: "img",
      "aria-labelledby": "latency-chart-title latency-chart-desc",
    },
    s("title", { id: "latency-chart-title" }, "Latency distribution (log scale)"),
    s("desc", { id: "latency-chart-desc" }, desc),
    // Grid and axes.
    g.yTicks.map((t) => [
      s("line", { x1: g.plot.x0, x2: g.plot.x1, y1: t.y, y2: t.y, class: "grid" }),
      s("text", { x: g.plot.x0 - 6, y: t.y + 4, "text-anchor": "end", class: "tick" }, t.label),
    ]),
    g.xTicks.map((t) => [
      s("line", { x1: t.x, x2: t.x, y1: g.plot.y0, y2: g.plot.y0 + 5, class: "axis" }),
      s("text", { x: t.x, y: g.plot.y0 + 18, "text-anchor": "middle", class: "tick" }, t.label),
    ]),
    s("line", { x1: g.plot.x0, x2: g.plot.x1, y1: g.plot.y0, y2: g.plot.y0, class: "axis" }),
    s("text", { x: (g.plot.x0 + g.plot.x1) / 2, y: g.height - 4, "text-anchor": "middle", class: "axis-label" }, "latency (ms, log scale)"),
    s("text", { x: 12, y: (g.plot.y0 + g.plot.y1) / 2, "text-anchor": "middle", class: "axis-label", transform: `rotate(-90 12 ${(g.plot.y0 + g.plot.y1) / 2})` }, "share of operations"),
    g.lines.map((l, i) => s("polyline", { points: l.points, class: `series ${series[i].cls}`, dataset: { series: series[i].key } })));
    fill(box, svg,
      h("ul", { class: "chart-legend" }, series.map((x) =>
        h("li", null, h("span", { class: `swatch ${x.cls}`, "aria-hidden": "true" }), x.name))));
  }

  function drawHashing(list) {
    const mine = ctx.session()?.stack?.password_storage;
    const lengths = barLengths(list.map((m) => m.ms));
    fill(byId("hashing-chart"), list.length === 0
      ? h("p", { class: "muted" }, "No hashing figures came back.")
      : h("ul", { class: "bars" }, list.map((m, i) =>
        h("li", { class: m.mode === mine ? "mine" : null, dataset: { mode: String(m.mode), ms: String(m.ms) } },
          h("span", { class: "bar-label" }, String(m.mode), m.mode === mine ? " (yours)" : ""),
          h("span", { class: "bar-track", "aria-hidden": "true" }, h("span", { class: "bar-fill", style: { width: `${lengths[i]}%` } })),
          h("span", { class: "bar-value" }, formatMs(m.ms))))));
  }

  return {
    reset() {
      fill(byId("analysis-overview"));
      byId("benchmark-result").hidden = true;
      byId("benchmark-status").textContent = "";
      byId("benchmark-runtime").textContent = "";
      fill(byId("benchmark-table").tBodies[0]);
      fill(byId("latency-chart"));
      fill(byId("hashing-chart"));
    },
    show() {
      loadOverview();
    },
    hide() {},
    stop() {},
  };
}
