import { test } from "node:test";
import assert from "node:assert/strict";
import {
  parseServerTiming, breakdown, breakdownFromHeader, breakdownFromCapture, describeBreakdown, stepWidths,
} from "../js/lib/timing.js";

test("parses the backend's and the proxy's entries (joined headers)", () => {
  const t = parseServerTiming("backend;dur=1.200, cache;dur=0.100, db;dur=0.800, proxy;dur=0");
  assert.deepEqual(t, {
    backend: { dur: 1.2, desc: "" },
    cache: { dur: 0.1, desc: "" },
    db: { dur: 0.8, desc: "" },
    proxy: { dur: 0, desc: "" },
  });
});

test("descriptions, quotes with commas, odd spacing, case, junk", () => {
  const t = parseServerTiming('DB ; dur = 2 ; desc="read, then fill", miss, cache;desc=x;dur=abc, ;dur=3');
  assert.deepEqual(t.db, { dur: 2, desc: "read, then fill" });
  assert.deepEqual(t.miss, { dur: null, desc: "" });
  assert.deepEqual(t.cache, { dur: null, desc: "x" });
  assert.equal(Object.keys(t).length, 3);
  assert.deepEqual(parseServerTiming(null), {});
  assert.deepEqual(parseServerTiming(""), {});
});

test("a name given twice adds up", () => {
  assert.equal(parseServerTiming("db;dur=1, db;dur=2.5").db.dur, 3.5);
});

test("breakdown: backend's own time excludes cache and db; parts add up to 100%", () => {
  const b = breakdown({ proxy: 1, backend: 3, cache: 0.5, db: 1.5 });
  assert.equal(b.total, 4);
  assert.deepEqual(b.segments.map((s) => [s.key, s.ms, s.pct]), [
    ["proxy", 1, 25], ["backend", 1, 25], ["cache", 0.5, 12.5], ["db", 1.5, 37.5],
  ]);
  assert.equal(b.segments[3].label, "database");
});

test("breakdown never goes negative and copes with nothing", () => {
  const b = breakdown({ proxy: -1, backend: 1, cache: 2, db: NaN });
  assert.equal(b.segments.find((s) => s.key === "backend").ms, 0);
  assert.equal(b.total, 2);
  assert.deepEqual(breakdown().segments.map((s) => s.pct), [0, 0, 0, 0]);
});

test("breakdownFromHeader says whether there was a header", () => {
  const b = breakdownFromHeader("proxy;dur=0.3, backend;dur=1, cache;dur=0.2, db;dur=0.5");
  assert.equal(b.present, true);
  assert.equal(Math.round(b.total * 10) / 10, 1.3);
  assert.equal(breakdownFromHeader(null).present, false);
});

test("breakdownFromCapture uses proxy_ms, upstream_ms and the backend's timing", () => {
  const b = breakdownFromCapture({
    total_ms: 5, proxy_ms: 1, upstream_ms: 4, server_timing: "backend;dur=3, cache;dur=1, db;dur=1",
  });
  assert.deepEqual(b.segments.map((s) => s.ms), [1, 2, 1, 1]);
  // Without server_timing the upstream time is the backend's.
  const c = breakdownFromCapture({ total_ms: 5, proxy_ms: 1, upstream_ms: 4, server_timing: null });
  assert.deepEqual(c.segments.map((s) => s.ms), [1, 4, 0, 0]);
  // Without proxy_ms: total less upstream.
  const d = breakdownFromCapture({ total_ms: 5, upstream_ms: 3 });
  assert.equal(d.segments[0].ms, 2);
  // A request the proxy answered itself.
  const e = breakdownFromCapture({ total_ms: 0.4, proxy_ms: 0.4, upstream_ms: null });
  assert.deepEqual(e.segments.map((s) => s.ms), [0.4, 0, 0, 0]);
});

test("describeBreakdown reads out every part and the total", () => {
  const text = describeBreakdown(breakdown({ proxy: 1, backend: 2 }), (ms) => `${ms}ms`);
  assert.equal(text, "proxy 1ms, backend 2ms, cache 0ms, database 0ms; total 3ms");
});

test("stepWidths are shares of the longest step", () => {
  assert.deepEqual(stepWidths([{ ms: 10 }, { ms: 5 }, { ms: 0 }, {}]), [100, 50, 0, 0]);
  assert.deepEqual(stepWidths([]), []);
});
