import { test } from "node:test";
import assert from "node:assert/strict";
import {
  normalizeTopology, orderPools, stateText, addInstancePath, killInstancePath, memberChanges, canKill, canAdd, shapeKey,
  kindText, kindDescription, containerOffer, drillOffer, isOwnDrill,
} from "../js/lib/topology.js";
import { normalizeChoices } from "../js/lib/choices.js";

const SAMPLE = {
  drills: true,
  proxy: { addr: "[::]:8443", protocols: ["h1", "h2", "h3"] },
  pools: [
    { name: "control", algorithm: "round_robin", members: [{ id: "c1", addr: "127.0.0.1:1", kind: "process", healthy: true, state: "healthy", in_flight: 0, ewma_ms: 0.4, requests: 3 }] },
    { name: "rust", algorithm: "p2c_ewma", members: [
      { id: "r1", addr: "127.0.0.1:2", healthy: true, state: "healthy", in_flight: 2, ewma_ms: 1.2, requests: 10 },
      { id: "r2", addr: "127.0.0.1:3", healthy: false, state: "ejected", in_flight: 0, ewma_ms: null, requests: 1 },
    ] },
  ],
  session: { code: "abc", pool: "rust", database: { engine: "sqlite", where: "embedded file" }, cache: { engine: "memory", where: "in process" } },
};

test("normalizeTopology keeps what the diagram needs", () => {
  const t = normalizeTopology(SAMPLE);
  assert.equal(t.drills, true);
  assert.deepEqual(t.proxy.protocols, ["h1", "h2", "h3"]);
  assert.equal(t.pools[1].healthy, 1);
  assert.equal(t.pools[1].members[1].state, "ejected");
  assert.equal(t.pools[1].members[1].ewma_ms, null);
  assert.equal(t.session.database.engine, "sqlite");
});

test("normalizeTopology survives missing parts", () => {
  const t = normalizeTopology({ pools: [{ name: "p", members: [{ id: 1, healthy: false }, { addr: "x" }] }, { members: [] }] });
  assert.equal(t.drills, false);
  assert.equal(t.pools.length, 1);
  assert.deepEqual(t.pools[0].members.map((m) => [m.id, m.state]), [["1", "down"]]);
  assert.equal(t.session, null);
  assert.deepEqual(normalizeTopology(null).pools, []);
});

test("the session's pool is drawn first", () => {
  assert.deepEqual(orderPools(normalizeTopology(SAMPLE)).map((p) => p.name), ["rust", "control"]);
});

test("paths are encoded", () => {
  assert.equal(addInstancePath("rust"), "/api/topology/pools/rust/instances");
  assert.equal(addInstancePath("rust", "process"), "/api/topology/pools/rust/instances?kind=process");
  assert.equal(addInstancePath("rust", "container"), "/api/topology/pools/rust/instances?kind=container");
  assert.equal(addInstancePath("a b", "con tainer"), "/api/topology/pools/a%20b/instances?kind=con%20tainer");
  assert.equal(killInstancePath("a b", "i/1"), "/api/topology/pools/a%20b/instances/i%2F1");
});

test("memberChanges names who came, who left, who changed state", () => {
  const a = normalizeTopology(SAMPLE);
  const b = normalizeTopology({ ...SAMPLE, pools: [
    SAMPLE.pools[0],
    { name: "rust", members: [{ id: "r1", state: "draining" }, { id: "r3", state: "healthy" }] },
  ] });
  assert.deepEqual(memberChanges(a, b), {
    added: ["rust/r3"], removed: ["rust/r2"], changed: [{ key: "rust/r1", from: "healthy", to: "draining" }],
  });
  assert.equal(stateText({ state: "ejected" }), "ejected: failing, taken out of rotation");
});

test("drills are offered only on the session's own drill pool, never on shared pools", () => {
  // As `stacklab up` answers: control's own member is "external", backend instances "process".
  const answer = (session, extra = {}) => normalizeTopology({
    drills: true,
    drill_limits: { instances: 2, max_instances: 3, max_pools: 2, pools_running: 1 },
    pools: [
      { name: "control", members: [{ id: "control-1", kind: "external", state: "healthy" }] },
      { name: "rust", members: [{ id: "rust-1", kind: "process", state: "healthy" }, { id: "x", kind: "external" }] },
      { name: "rust-drill-0a1b2c", drill: true, members: [{ id: "rust-drill-0a1b2c-7", kind: "process", state: "healthy" }] },
    ],
    session,
    ...extra,
  });
  const shared = answer({ pool: "rust", runtime_pool: "rust", drill_pool: null });
  const [control, rust, drill] = shared.pools;
  assert.equal(drill.drill, true);
  assert.equal(canKill(shared, control, control.members[0]), false);
  assert.deepEqual(rust.members.map((m) => canKill(shared, rust, m)), [false, false]);
  assert.equal(canAdd(shared, rust), false);
  assert.deepEqual(drillOffer(shared), { offer: true, enabled: true, reason: "" });

  const drilling = answer({ pool: "rust-drill-0a1b2c", runtime_pool: "rust", drill_pool: "rust-drill-0a1b2c", member: "rust-drill-0a1b2c-7" });
  assert.equal(isOwnDrill(drilling, drilling.pools[2]), true);
  assert.equal(canKill(drilling, drilling.pools[2], drilling.pools[2].members[0]), true);
  assert.equal(canKill(drilling, drilling.pools[1], drilling.pools[1].members[0]), false);
  assert.equal(canAdd(drilling, drilling.pools[2]), true);
  assert.equal(drilling.session.member, "rust-drill-0a1b2c-7");
  assert.equal(drillOffer(drilling).offer, false, "one drill at a time");
  assert.equal(orderPools(drilling)[0].name, "rust-drill-0a1b2c", "the pool serving the session first");

  const full = answer({ pool: "rust", drill_pool: null }, { drill_limits: { max_pools: 1, pools_running: 1 } });
  assert.equal(drillOffer(full).enabled, false);
  assert.match(drillOffer(full).reason, /1 drills are running/);
  assert.equal(drillOffer(answer({ pool: "rust" }, { drills: false })).offer, false);
  assert.equal(drillOffer(answer(null)).offer, false);
});

test("shapeKey ignores load and health, not who is there", () => {
  const a = normalizeTopology(SAMPLE);
  const busier = normalizeTopology({
    ...SAMPLE,
    pools: SAMPLE.pools.map((p) => ({
      ...p,
      members: p.members.map((m) => ({ ...m, in_flight: 9, ewma_ms: 42, requests: 1000, state: "ejected", healthy: false })),
    })),
  });
  assert.equal(shapeKey(busier), shapeKey(a));
  const fewer = normalizeTopology({ ...SAMPLE, pools: [SAMPLE.pools[0], { ...SAMPLE.pools[1], members: [SAMPLE.pools[1].members[0]] }] });
  assert.notEqual(shapeKey(fewer), shapeKey(a));
  assert.notEqual(shapeKey(normalizeTopology({ ...SAMPLE, drills: false })), shapeKey(a));
});

test("container instances are drawn with their kind and can be killed like processes", () => {
  const t = normalizeTopology({
    drills: true,
    pools: [{ name: "rust", members: [
      { id: "rust-1", kind: "process", pid: 41, state: "healthy" },
      { id: "rust-c2", kind: "container", pid: 0, state: "healthy" },
      { id: "x", kind: "external" },
      { id: "y" },
    ] }],
  });
  t.session = { pool: "rust", drillPool: "rust" }; // as if it were the session's drill pool
  const [p, c, e, unknown] = t.pools[0].members;
  assert.deepEqual([p, c, e, unknown].map((m) => canKill(t, t.pools[0], m)), [true, true, false, false]);
  assert.deepEqual([p, c, e, unknown].map((m) => kindText(m.kind)), ["process", "container", "external", ""]);
  assert.equal(kindDescription("container"), "a Docker container control started");
  assert.equal(canAdd(t, t.pools[0]), false, "at max_instances (4 members, default cap 4)");
  // A member changing kind under the same id is a new node.
  const swapped = normalizeTopology({ drills: true, pools: [{ name: "rust", members: [{ id: "rust-1", kind: "container" }, { id: "rust-c2", kind: "container" }, { id: "x", kind: "external" }, { id: "y" }] }] });
  assert.notEqual(shapeKey(swapped), shapeKey(t));
});

test("containerOffer follows the docker provisioner of GET /api/options", () => {
  const options = (docker) => normalizeChoices({ choices: [
    { field: "provisioner", options: [{ value: "embedded", available: true }, ...(docker ? [docker] : [])] },
    { field: "database", options: [{ value: "sqlite" }] },
  ] });
  assert.deepEqual(containerOffer(options({ value: "docker", available: true })), { available: true, reason: "" });
  assert.deepEqual(
    containerOffer(options({ value: "docker", available: false, reason: "no [docker] section in the config" })),
    { available: false, reason: "no [docker] section in the config" });
  assert.equal(containerOffer(options({ value: "docker", available: false })).reason, "Docker is not available on this server");
  assert.equal(containerOffer(options(null)).available, false);
  assert.equal(containerOffer(undefined).available, false);
  assert.equal(containerOffer([]).reason, "this server offers no Docker provisioner");
});
