import { test } from "node:test";
import assert from "node:assert/strict";
import { normalizeChoices } from "../js/lib/choices.js";
import { benchRun, addRun, comparedStacks, MAX_RUNS } from "../js/lib/benchruns.js";

const choices = normalizeChoices({
  choices: [
    { field: "runtime", options: [
      { value: "rust", label: "Rust (hyper)" }, { value: "python", label: "Python (Flask)" }] },
    { field: "database", options: [{ value: "sqlite", label: "SQLite" }, { value: "postgres", label: "PostgreSQL" }] },
    { field: "cache", options: [{ value: "memory", label: "In memory" }, { value: "redis", label: "Redis" }] },
  ],
});

// Shaped like a POST /api/analysis/benchmark answer.
const RESULT = {
  writes: { ops: 50, p50_ms: 4.5, p95_ms: 6, p99_ms: 9 },
  db_reads: { ops: 50, p50_ms: 0.8, p95_ms: 1.2, p99_ms: 2.5 },
  cached_reads: { ops: 50, p50_ms: 0.05, p95_ms: 0.1, p99_ms: 0.2 },
  password_hashing: [{ mode: "plaintext", ms: 0 }, { mode: "bcrypt", ms: 61.2 }],
};
const STACK = { runtime: "python", database: "sqlite", cache: "memory", password_storage: "bcrypt" };

test("a run reads the figures, the runtime's label and the stack's", () => {
  const r = benchRun({ result: RESULT, stack: STACK, member: "python-77", choices, at: 5 });
  assert.deepEqual(r, {
    at: 5, runtime: "python", runtimeLabel: "Python (Flask)", member: "python-77",
    stackKey: "sqlite|memory", stackLabel: "SQLite × In memory",
    writeP50: 4.5, dbP50: 0.8, dbP99: 2.5, cachedP50: 0.05, mode: "bcrypt", hashMs: 61.2,
  });
});

test("a run of a partial answer has nulls, not NaN or throws", () => {
  const r = benchRun({ result: { writes: { p50_ms: "fast" } }, stack: {}, member: null, choices: [] });
  assert.equal(r.writeP50, null);
  assert.equal(r.dbP50, null);
  assert.equal(r.hashMs, null);
  assert.equal(r.runtimeLabel, "?");
  assert.equal(r.stackLabel, "? × ?");
  assert.equal(benchRun({}).member, "");
});

test("without the stack's runtime, the member that answered names it", () => {
  const r = benchRun({ result: RESULT, stack: { database: "sqlite", cache: "memory" }, member: "rust-3", choices });
  assert.equal(r.runtime, "rust");
  assert.equal(r.runtimeLabel, "Rust (hyper)");
});

test("runs are kept newest first, at most MAX_RUNS", () => {
  let runs = [];
  for (let i = 0; i < MAX_RUNS + 3; i++) runs = addRun(runs, { at: i });
  assert.equal(runs.length, MAX_RUNS);
  assert.equal(runs[0].at, MAX_RUNS + 2);
  assert.deepEqual(addRun(null, { at: 1 }), [{ at: 1 }]);
  assert.deepEqual(addRun([{ at: 1 }], { at: 2 }, 0), [{ at: 2 }]);
});

test("a stack measured on two runtimes is a comparison; one runtime twice is not", () => {
  const py = benchRun({ result: RESULT, stack: STACK, choices });
  const rs = benchRun({ result: RESULT, stack: { ...STACK, runtime: "rust" }, choices });
  const pg = benchRun({ result: RESULT, stack: { ...STACK, database: "postgres" }, choices });
  assert.deepEqual(comparedStacks([py, py, pg]), []);
  assert.deepEqual(comparedStacks([py, pg, rs]), ["sqlite|memory"]);
  assert.deepEqual(comparedStacks(null), []);
});
