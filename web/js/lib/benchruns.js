// The benchmark runs of this page, kept across sessions so a person can compare runtimes (or
// engines) on the same stack: one row per POST /api/analysis/benchmark answer, newest first.
// Pure, unit-tested in web/tests/benchruns.test.js.

import { runtimeOfMember, runtimeOfPool, runtimeLabel } from "./runtimes.js";

/** Runs kept; older ones drop off. */
export const MAX_RUNS = 10;

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

function labelOf(choices, field, value) {
  const c = (Array.isArray(choices) ? choices : []).find((x) => x?.field === field);
  return c?.options?.find((o) => o?.value === value)?.label || value || "?";
}

/**
 * One row from a benchmark answer: `result` its JSON, `stack` the session's stack, `member`
 * the x-stacklab-member that answered it, `choices` the normalized options (for labels).
 * The runtime is the session's (its stack); the member, when it is a runtime's instance, is
 * what actually ran it.
 */
export function benchRun({ result, stack, member, choices, at }) {
  const r = result && typeof result === "object" ? result : {};
  const st = stack && typeof stack === "object" ? stack : {};
  const runtime = runtimeOfPool(choices, st.runtime) || runtimeOfMember(choices, member);
  const mode = typeof st.password_storage === "string" ? st.password_storage : "";
  const hashing = Array.isArray(r.password_hashing) ? r.password_hashing : [];
  return {
    at: num(at),
    runtime: runtime?.value || st.runtime || "",
    runtimeLabel: runtimeLabel(runtime) || st.runtime || "?",
    member: typeof member === "string" ? member : "",
    stackKey: `${st.database || "?"}|${st.cache || "?"}`,
    stackLabel: `${labelOf(choices, "database", st.database)} × ${labelOf(choices, "cache", st.cache)}`,
    writeP50: num(r.writes?.p50_ms),
    dbP50: num(r.db_reads?.p50_ms),
    dbP99: num(r.db_reads?.p99_ms),
    cachedP50: num(r.cached_reads?.p50_ms),
    mode,
    hashMs: num(hashing.find((m) => m?.mode === mode)?.ms),
  };
}

/** The runs with `run` added first, at most `max` of them. */
export function addRun(runs, run, max = MAX_RUNS) {
  return [run, ...(Array.isArray(runs) ? runs : [])].slice(0, Math.max(1, max));
}

/**
 * Whether the runs hold a comparison: the same stack (database × cache) measured on more than
 * one runtime. Returns those stacks' keys.
 */
export function comparedStacks(runs) {
  const byStack = new Map();
  for (const r of Array.isArray(runs) ? runs : []) {
    if (!byStack.has(r.stackKey)) byStack.set(r.stackKey, new Set());
    byStack.get(r.stackKey).add(r.runtime);
  }
  return [...byStack].filter(([, rts]) => rts.size > 1).map(([k]) => k);
}
