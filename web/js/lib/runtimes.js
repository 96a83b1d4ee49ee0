// Which runtime a pool or an instance is. The runtimes are the options of the `runtime` choice
// of GET /api/options (every backends/<name>/runtime.toml the server found); each has a pool
// named after it, and an instance's id is `<pool>-<n>` (e.g. "python-14767", "rust-c2"), so
// the id an answer carries in x-stacklab-member says which runtime served it.
// Pure, unit-tested in web/tests/runtimes.test.js.

/** The runtime options of the (normalized) choices: [{value, label, description, ...}]. */
export function runtimeOptions(choices) {
  const c = (Array.isArray(choices) ? choices : []).find((x) => x?.field === "runtime");
  return (Array.isArray(c?.options) ? c.options : []).filter((o) => typeof o?.value === "string" && o.value);
}

/** The runtime whose pool is `pool`, or null (control's own pool, or one the options do not list). */
export function runtimeOfPool(choices, pool) {
  return runtimeOptions(choices).find((o) => o.value === pool) || null;
}

/**
 * The runtime of the instance `member` ("python-14767"), or null when it is none of them
 * (control's own member, the proxy itself, an id of another shape). The longest matching name
 * wins, so runtimes whose names share a start ("node", "node-bun") are told apart.
 */
export function runtimeOfMember(choices, member) {
  if (typeof member !== "string" || member === "") return null;
  let best = null;
  for (const o of runtimeOptions(choices)) {
    if (member.startsWith(`${o.value}-`) && member.length > o.value.length + 1
      && (!best || o.value.length > best.value.length)) best = o;
  }
  return best;
}

/** What a person reads for a runtime: its label ("Python (Flask)"), else its name. */
export const runtimeLabel = (runtime) => (runtime ? runtime.label || runtime.value : "");
