// The topology answer, read defensively, and the names and paths the diagram needs.
// Pure, unit-tested in web/tests/topology.test.js.

const STATES = ["healthy", "ejected", "draining", "down"];

function member(m) {
  const state = STATES.includes(m?.state) ? m.state : m?.healthy === false ? "down" : m?.healthy ? "healthy" : "unknown";
  return {
    id: String(m?.id ?? ""),
    addr: m?.addr ?? "",
    kind: m?.kind ?? "",
    healthy: m?.healthy === true || state === "healthy",
    state,
    in_flight: Number.isFinite(m?.in_flight) ? m.in_flight : 0,
    ewma_ms: Number.isFinite(m?.ewma_ms) ? m.ewma_ms : null,
    requests: Number.isFinite(m?.requests) ? m.requests : null,
  };
}

/** The answer of GET /api/topology in a shape the diagram can trust. */
export function normalizeTopology(json) {
  const t = json && typeof json === "object" ? json : {};
  const pools = (Array.isArray(t.pools) ? t.pools : []).map((p) => {
    const members = (Array.isArray(p?.members) ? p.members : []).map(member).filter((m) => m.id);
    return {
      name: String(p?.name ?? ""),
      algorithm: p?.algorithm ?? "",
      drill: p?.drill === true,
      members,
      healthy: members.filter((m) => m.state === "healthy").length,
    };
  }).filter((p) => p.name);
  const s = t.session && typeof t.session === "object" ? t.session : null;
  const limits = t.drill_limits && typeof t.drill_limits === "object" ? t.drill_limits : {};
  const count = (v, d) => (Number.isInteger(v) && v >= 0 ? v : d);
  return {
    drills: t.drills === true,
    drillLimits: {
      instances: count(limits.instances, 2),
      maxInstances: count(limits.max_instances, 4),
      maxPools: count(limits.max_pools, 4),
      poolsRunning: count(limits.pools_running, 0),
    },
    proxy: {
      addr: t.proxy?.addr ?? "",
      protocols: Array.isArray(t.proxy?.protocols) ? t.proxy.protocols : [],
    },
    pools,
    session: s
      ? {
          code: s.code ?? "",
          pool: s.pool ?? "",
          runtimePool: s.runtime_pool ?? s.pool ?? "",
          drillPool: typeof s.drill_pool === "string" && s.drill_pool ? s.drill_pool : null,
          member: typeof s.member === "string" && s.member ? s.member : null,
          database: { engine: s.database?.engine ?? "", where: s.database?.where ?? "" },
          cache: { engine: s.cache?.engine ?? "", where: s.cache?.where ?? "" },
        }
      : null,
  };
}

/** The pools in drawing order: the session's pool first. */
export function orderPools(topology) {
  const mine = topology.session?.pool;
  return [...topology.pools].sort((a, b) => (b.name === mine) - (a.name === mine));
}

/** What a member's state means, for a person. */
export function stateText(m) {
  switch (m.state) {
    case "healthy":
      return "healthy";
    case "ejected":
      return "ejected: failing, taken out of rotation";
    case "draining":
      return "draining: finishing its requests";
    case "down":
      return "down";
    default:
      return "unknown";
  }
}

/** The kinds of backend instance control runs: a child process, or a Docker container. */
export const INSTANCE_KINDS = ["process", "container"];

/**
 * Whether the UI offers to kill a member: only backend instances of the session's own drill
 * pool (kind "process" or "container"). Shared pools serve every session and the server
 * refuses (403 not_your_pool); control itself and members from elsewhere ("external") are
 * not control's to kill.
 */
export const canKill = (topology, pool, m) =>
  INSTANCE_KINDS.includes(m.kind) && isOwnDrill(topology, pool);

/** Whether `pool` is the session's own drill pool (instances started for it alone). */
export const isOwnDrill = (topology, pool) =>
  Boolean(topology.session?.drillPool) && topology.session.drillPool === pool.name;

/** A member's kind in words, shown next to it (text, not a colour alone). */
export function kindText(kind) {
  switch (kind) {
    case "process":
      return "process";
    case "container":
      return "container";
    case "external":
      return "external";
    default:
      return "";
  }
}

/** What a member's kind means, for a person (the label's description). */
export function kindDescription(kind) {
  switch (kind) {
    case "process":
      return "a child process of control";
    case "container":
      return "a Docker container control started";
    case "external":
      return "not started by control";
    default:
      return "";
  }
}

/**
 * Whether a container instance can be asked for: the server starts them only where it has a
 * Docker engine, which GET /api/options tells through the `docker` provisioner's availability
 * (its reason when not). `choices` is the normalized options answer.
 * @returns {{available: boolean, reason: string}}
 */
export function containerOffer(choices) {
  const provisioner = (Array.isArray(choices) ? choices : []).find((c) => c?.field === "provisioner");
  const docker = provisioner?.options?.find((o) => o?.value === "docker");
  if (!docker) return { available: false, reason: "this server offers no Docker provisioner" };
  if (docker.available === false) {
    return { available: false, reason: typeof docker.reason === "string" && docker.reason ? docker.reason : "Docker is not available on this server" };
  }
  return { available: true, reason: "" };
}

/**
 * Whether the UI offers to add an instance to a pool: only to the session's own drill pool
 * (which may have lost them all), below its cap.
 */
export const canAdd = (topology, pool) =>
  isOwnDrill(topology, pool) && pool.members.length < topology.drillLimits.maxInstances;

/**
 * Whether "Start a drill" is offered: the install allows drills and the session runs none.
 * @returns {{offer: boolean, enabled: boolean, reason: string}}
 */
export function drillOffer(topology) {
  if (!topology.drills || !topology.session) return { offer: false, enabled: false, reason: "" };
  if (topology.session.drillPool) return { offer: false, enabled: false, reason: "" };
  const l = topology.drillLimits;
  if (l.poolsRunning >= l.maxPools) {
    return { offer: true, enabled: false, reason: `${l.maxPools} drills are running on this server; try again when one has ended` };
  }
  return { offer: true, enabled: true, reason: "" };
}

export const DRILL_PATH = "/api/topology/drill";

/**
 * What the diagram's structure depends on: everything but each member's live state and load
 * (and so each pool's healthy count). Equal keys: the nodes drawn can be updated in place.
 */
export function shapeKey(topology) {
  return JSON.stringify({
    drills: topology.drills,
    proxy: topology.proxy,
    session: topology.session,
    limits: topology.drillLimits,
    pools: topology.pools.map((p) => ({
      name: p.name,
      algorithm: p.algorithm,
      drill: p.drill,
      members: p.members.map((m) => [m.id, m.addr, m.kind]),
    })),
  });
}

/** POST here to start one more instance in `pool`; `kind` ("process", "container") when given. */
export const addInstancePath = (pool, kind) =>
  `/api/topology/pools/${encodeURIComponent(pool)}/instances`
  + (kind ? `?kind=${encodeURIComponent(kind)}` : "");
export const killInstancePath = (pool, id) =>
  `/api/topology/pools/${encodeURIComponent(pool)}/instances/${encodeURIComponent(id)}`;

/** Members that appeared or left between two answers (for a status line a person can follow). */
export function memberChanges(before, after) {
  const ids = (t) => new Map(t.pools.flatMap((p) => p.members.map((m) => [`${p.name}/${m.id}`, m])));
  const a = ids(before);
  const b = ids(after);
  const added = [...b.keys()].filter((k) => !a.has(k));
  const removed = [...a.keys()].filter((k) => !b.has(k));
  const changed = [...b.keys()].filter((k) => a.has(k) && a.get(k).state !== b.get(k).state)
    .map((k) => ({ key: k, from: a.get(k).state, to: b.get(k).state }));
  return { added, removed, changed };
}
