// Where a request's time went: the Server-Timing header parsed, and the four-part breakdown the
// timing bars draw (proxy, backend, cache, database).
//
// The proxy appends `proxy;dur=` (its own time, without the upstream); the backend sends
// `backend;dur=` (its whole handling) with `cache;dur=` and `db;dur=` inside it. So the bar's
// "backend" part is the backend's time less cache and database, and the parts add up to the
// whole. Pure, unit-tested in web/tests/timing.test.js.

/**
 * Parses a Server-Timing value (several headers arrive joined by ", ").
 * @returns {Record<string, {dur: number|null, desc: string}>} by metric name, lower-cased;
 *   a name given twice keeps the sum of its durations.
 */
export function parseServerTiming(header) {
  const out = {};
  if (typeof header !== "string" || header.trim() === "") return out;
  for (const entry of splitOutsideQuotes(header, ",")) {
    const parts = splitOutsideQuotes(entry, ";").map((p) => p.trim());
    const name = (parts.shift() || "").toLowerCase();
    if (!name || !/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(name)) continue;
    let dur = null;
    let desc = "";
    for (const p of parts) {
      const eq = p.indexOf("=");
      const key = (eq === -1 ? p : p.slice(0, eq)).trim().toLowerCase();
      let value = eq === -1 ? "" : p.slice(eq + 1).trim();
      if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
        value = value.slice(1, -1).replace(/\\(.)/g, "$1");
      }
      if (key === "dur" && dur === null) {
        const n = Number(value);
        if (value !== "" && Number.isFinite(n)) dur = n;
      } else if (key === "desc" && desc === "") {
        desc = value;
      }
    }
    if (out[name]) {
      const prev = out[name];
      out[name] = { dur: dur === null ? prev.dur : (prev.dur ?? 0) + dur, desc: prev.desc || desc };
    } else {
      out[name] = { dur, desc };
    }
  }
  return out;
}

function splitOutsideQuotes(s, sep) {
  const out = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '"' && s[i - 1] !== "\\") quoted = !quoted;
    if (c === sep && !quoted) {
      out.push(cur);
      cur = "";
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out.filter((x) => x.trim() !== "");
}

const num = (v) => (typeof v === "number" && Number.isFinite(v) && v > 0 ? v : 0);

export const SEGMENTS = [
  { key: "proxy", label: "proxy" },
  { key: "backend", label: "backend" },
  { key: "cache", label: "cache" },
  { key: "db", label: "database" },
];

/**
 * The bar's parts from durations {proxy, backend, cache, db} (ms; backend includes cache and db).
 * @returns {{total: number, segments: {key, label, ms, pct}[]}} pct adds up to 100 (or 0).
 */
export function breakdown({ proxy, backend, cache, db } = {}) {
  const p = num(proxy);
  const c = num(cache);
  const d = num(db);
  const b = Math.max(0, num(backend) - c - d);
  const values = { proxy: p, backend: b, cache: c, db: d };
  const total = p + b + c + d;
  const segments = SEGMENTS.map((s) => ({
    ...s,
    ms: values[s.key],
    pct: total > 0 ? (values[s.key] / total) * 100 : 0,
  }));
  return { total, segments };
}

/** The breakdown of a fetch answer's Server-Timing header. */
export function breakdownFromHeader(header) {
  const t = parseServerTiming(header);
  const has = Object.keys(t).length > 0;
  return {
    present: has,
    ...breakdown({
      proxy: t.proxy?.dur,
      backend: t.backend?.dur,
      cache: t.cache?.dur,
      db: t.db?.dur,
    }),
  };
}

/**
 * The breakdown of a request the inspector captured: the proxy's own time, the upstream time
 * (backend plus the hop to it), and the backend's cache and database time from its
 * Server-Timing when the capture has it. Without it, the upstream time counts as backend.
 */
export function breakdownFromCapture(req) {
  const t = parseServerTiming(req?.server_timing ?? "");
  const upstream = typeof req?.upstream_ms === "number" ? req.upstream_ms : t.backend?.dur;
  let proxy = req?.proxy_ms;
  if (typeof proxy !== "number" && typeof req?.total_ms === "number") {
    proxy = req.total_ms - num(upstream);
  }
  return breakdown({
    proxy,
    backend: Math.max(num(upstream), num(t.backend?.dur)),
    cache: t.cache?.dur,
    db: t.db?.dur,
  });
}

/** "proxy 0.30 ms, backend 1.00 ms, …" for a screen reader, with a formatter for ms. */
export function describeBreakdown(b, fmt) {
  const parts = b.segments.map((s) => `${s.label} ${fmt(s.ms)}`);
  return `${parts.join(", ")}; total ${fmt(b.total)}`;
}

/** Widths for steps of a provisioning run: each step's share of the longest, in percent. */
export function stepWidths(steps) {
  const max = Math.max(0, ...steps.map((s) => num(s.ms)));
  return steps.map((s) => (max > 0 ? (num(s.ms) / max) * 100 : 0));
}
