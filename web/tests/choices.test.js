import { test } from "node:test";
import assert from "node:assert/strict";
import {
  normalizeChoices, orderChoices, optionState, visibleOptions, reconcile,
  defaultSelection, restoreSelection, launchBody, describeStack,
} from "../js/lib/choices.js";

// Shaped like the contract's GET /api/options.
const OPTIONS = {
  choices: [
    { field: "runtime", label: "Runtime", description: "d", default: "rust", options: [
      { value: "rust", label: "Rust (hyper)", description: "d", available: true },
      { value: "python", label: "Python", description: "d", available: false, reason: "not built yet" },
    ] },
    { field: "protocol", label: "Protocol", default: "rest", options: [
      { value: "rest", label: "REST", available: true },
      { value: "graphql", label: "GraphQL", available: true },
    ] },
    { field: "database", label: "Database", default: "sqlite", options: [
      { value: "sqlite", label: "SQLite", available: true },
      { value: "postgres", label: "PostgreSQL", available: true, provisioners: ["shared", "docker"] },
      { value: "mongodb", label: "MongoDB", available: false, reason: "no server configured" },
    ] },
    { field: "cache", label: "Cache", default: "memory", options: [
      { value: "memory", label: "In memory", available: true },
      { value: "redis", label: "Redis", available: true, provisioners: ["shared", "docker"] },
      { value: "memcached", label: "Memcached", available: true, provisioners: ["docker"] },
      { value: "none", label: "None", available: true },
    ] },
    { field: "cache_policy", label: "Eviction policy", default: "lru",
      default_for: { memory: "lru", redis: "allkeys-lru", memcached: "lru", none: "none" },
      options: [
        { value: "lru", label: "LRU", caches: ["memory", "memcached"], available: true },
        { value: "lfu", label: "LFU", caches: ["memory"], available: true },
        { value: "allkeys-lru", label: "allkeys-lru", caches: ["redis"], available: true },
        { value: "allkeys-lfu", label: "allkeys-lfu", caches: ["redis"], available: true },
        { value: "none", label: "None", caches: ["none"], available: true },
      ] },
    { field: "provisioner", label: "Provisioner", default: "embedded", options: [
      { value: "embedded", label: "Embedded", available: true },
      { value: "shared", label: "Shared servers", available: true },
      { value: "docker", label: "Docker", available: false, reason: "no Docker engine" },
    ] },
  ],
};
const choices = normalizeChoices(OPTIONS);
const byField = (f) => choices.find((c) => c.field === f);

test("normalizeChoices accepts the object or a bare array and drops junk", () => {
  assert.equal(normalizeChoices(OPTIONS.choices).length, 6);
  assert.deepEqual(normalizeChoices(null), []);
  assert.deepEqual(normalizeChoices({ choices: [null, { nofield: 1 }] }), []);
  const c = normalizeChoices({ choices: [{ field: "x", options: [{ value: "a" }, { nope: 1 }] }] });
  assert.equal(c[0].label, "x");
  assert.deepEqual(c[0].options.map((o) => o.label), ["a"]);
});

test("orderChoices puts the provisioner first and the policy after the cache", () => {
  const order = orderChoices(choices).map((c) => c.field);
  assert.deepEqual(order, ["provisioner", "runtime", "protocol", "database", "cache", "cache_policy"]);
});

test("the defaults are preselected", () => {
  assert.deepEqual(defaultSelection(choices), {
    runtime: "rust", protocol: "rest", database: "sqlite", cache: "memory",
    cache_policy: "lru", provisioner: "embedded",
  });
});

test("an unavailable option is disabled with the server's reason", () => {
  const s = optionState(choices, byField("database"), byField("database").options[2], defaultSelection(choices));
  assert.deepEqual(s, { visible: true, enabled: false, reason: "no server configured" });
});

test("an option the chosen provisioner cannot give is disabled, saying which can", () => {
  const sel = defaultSelection(choices);
  const s = optionState(choices, byField("database"), byField("database").options[1], sel);
  assert.equal(s.enabled, false);
  assert.match(s.reason, /Embedded cannot give it: choose Shared servers or Docker under “Provisioner”/);
  const ok = optionState(choices, byField("database"), byField("database").options[1], { ...sel, provisioner: "shared" });
  assert.equal(ok.enabled, true);
});

test("only the policies of the chosen cache are shown", () => {
  const sel = defaultSelection(choices);
  assert.deepEqual(visibleOptions(choices, byField("cache_policy"), sel).map((x) => x.option.value), ["lru", "lfu"]);
  assert.deepEqual(
    visibleOptions(choices, byField("cache_policy"), { ...sel, cache: "redis" }).map((x) => x.option.value),
    ["allkeys-lru", "allkeys-lfu"],
  );
});

test("changing the cache resets the policy to default_for", () => {
  const sel = { ...defaultSelection(choices), provisioner: "shared", cache: "redis", cache_policy: "lfu" };
  const r = reconcile(choices, sel, "cache");
  assert.equal(r.selection.cache_policy, "allkeys-lru");
  // Even a policy valid for the new cache is reset: the cache changed.
  const back = reconcile(choices, { ...r.selection, cache: "memory", cache_policy: "lfu" }, "cache");
  assert.equal(back.selection.cache_policy, "lru");
});

test("switching the provisioner away moves dependent choices back to what it can give", () => {
  const sel = { ...defaultSelection(choices), provisioner: "shared", database: "postgres", cache: "redis", cache_policy: "allkeys-lfu" };
  assert.deepEqual(reconcile(choices, sel, "provisioner").changes, [], "a valid selection is left as it is");
  const r = reconcile(choices, { ...sel, provisioner: "embedded" }, "provisioner");
  assert.equal(r.selection.database, "sqlite");
  assert.equal(r.selection.cache, "memory");
  assert.equal(r.selection.cache_policy, "lru");
  assert.deepEqual(r.changes.map((c) => c.field).sort(), ["cache", "cache_policy", "database"]);
  const db = r.changes.find((c) => c.field === "database");
  assert.equal(db.from, "postgres");
  assert.match(db.reason, /Embedded cannot give it/);
  assert.deepEqual(r.blocked, []);
});

test("a field with no enabled option is blocked", () => {
  const c = normalizeChoices({ choices: [{ field: "runtime", default: "a", options: [
    { value: "a", available: false, reason: "x" }, { value: "b", available: false } ] }] });
  const r = reconcile(c, { runtime: "a" });
  assert.deepEqual(r.blocked, ["runtime"]);
  assert.equal(r.selection.runtime, undefined);
});

test("a cache with no policies to show sends its default and is not blocked", () => {
  const c = normalizeChoices({ choices: [
    { field: "cache", default: "none", options: [{ value: "none" }] },
    { field: "cache_policy", default_for: { none: "none" }, options: [{ value: "lru", caches: ["memory"] }] },
  ] });
  const r = reconcile(c, { cache: "none" }, "cache");
  assert.deepEqual(r.blocked, []);
  assert.equal(r.selection.cache_policy, "none");
});

test("restoreSelection lays remembered choices over the defaults, keeping what is still valid", () => {
  const stored = JSON.stringify({ protocol: "graphql", database: "postgres", cache: "bogus", extra: "x", provisioner: "shared" });
  const sel = restoreSelection(choices, stored);
  assert.equal(sel.protocol, "graphql");
  assert.equal(sel.database, "postgres");
  assert.equal(sel.cache, "memory");
  assert.equal(sel.extra, undefined);
  assert.deepEqual(restoreSelection(choices, "{not json"), defaultSelection(choices));
  // A remembered provisioner that is now unavailable falls back, and so does what depended on it.
  const sel2 = restoreSelection(choices, { provisioner: "docker", database: "postgres" });
  assert.equal(sel2.provisioner, "embedded");
  assert.equal(sel2.database, "sqlite");
});

test("launchBody keeps only chosen strings", () => {
  assert.deepEqual(launchBody({ a: "x", b: "", c: undefined, d: 3 }), { a: "x" });
});

test("describeStack labels a stack in picker order and keeps unknown fields", () => {
  const d = describeStack(choices, { database: "postgres", provisioner: "shared", transport: "h3" });
  assert.deepEqual(d.map((x) => [x.field, x.valueLabel]), [
    ["provisioner", "Shared servers"], ["database", "PostgreSQL"], ["transport", "h3"],
  ]);
});

test("a choice the chosen runtime does not offer is disabled with its reason, and a selection moves off it", () => {
  const withRuby = normalizeChoices({
    choices: OPTIONS.choices.map((c) => (c.field !== "runtime" ? c : {
      ...c,
      options: [...c.options, {
        value: "ruby", label: "Ruby (Rails)", description: "d", available: true,
        unsupported: [{ field: "protocol", value: "graphql", reason: "no GraphQL here" }],
      }],
    })),
  });
  const protocol = withRuby.find((c) => c.field === "protocol");
  const graphql = protocol.options.find((o) => o.value === "graphql");
  const sel = { ...defaultSelection(withRuby), protocol: "graphql" };
  assert.equal(optionState(withRuby, protocol, graphql, sel).enabled, true);
  const ruby = optionState(withRuby, protocol, graphql, { ...sel, runtime: "ruby" });
  assert.deepEqual(ruby, { visible: true, enabled: false, reason: "Ruby (Rails) does not offer it: no GraphQL here" });
  const r = reconcile(withRuby, { ...sel, runtime: "ruby" }, "runtime");
  assert.equal(r.selection.protocol, "rest");
  assert.deepEqual(r.changes.map((c) => [c.field, c.from, c.to]), [["protocol", "graphql", "rest"]]);
});
