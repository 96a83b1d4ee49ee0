'use strict';
// Analysis (CONTRACT.md §9): how big the session's data is, how its cache is doing, and how
// fast its stack reads, writes and hashes, measured on demand. The benchmark is bounded,
// writes rows of its own (`bench-…`) straight to the store with one precomputed hash (so the
// figure is the database's, not the hash function's) and removes them after, also when a step
// fails; hashing is measured per mode on its own, through the hashing gate.

const crypto = require('node:crypto');
const { ApiError, CacheError, StoreError, fromCacheError } = require('./errors');
const { Hasher, MODES } = require('./passwords');
const { Trace } = require('./service');

async function overview(session) {
  let db;
  try {
    db = await session.store.stats();
  } catch (e) {
    if (e instanceof StoreError) throw ApiError.unavailable('the database', e.message);
    throw e;
  }
  let cache;
  try {
    cache = await session.cache.stats();
  } catch (e) {
    if (e instanceof CacheError) throw fromCacheError(e);
    throw e;
  }
  const lookups = cache.hits + cache.misses;
  return { database: db, cache: { engine: session.cache.engine, stats: cache, hit_ratio: lookups === 0 ? null : cache.hits / lookups } };
}

function figures(latMs, wallMs) {
  const d = [...latMs].sort((a, b) => a - b);
  const pct = (p) => {
    const i = Math.max(Math.ceil(d.length * p) - 1, 0);
    return i < d.length ? d[i] : 0;
  };
  const step = Math.max(Math.floor(d.length / 500), 1);
  return {
    ops: d.length,
    ops_per_sec: wallMs <= 0 ? 0 : d.length / (wallMs / 1000),
    p50_ms: pct(0.5), p95_ms: pct(0.95), p99_ms: pct(0.99),
    samples_ms: d.filter((_, i) => i % step === 0),
  };
}

const now = () => performance.now();

async function store(fn) {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof StoreError) throw ApiError.unavailable('the database', e.message);
    throw e;
  }
}

async function quiet(fn) {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
  }
}

async function benchmark(session, limits, guards, reads, writes) {
  const top = limits.maxBenchmarkOps;
  if (reads < 1 || reads > top) throw ApiError.invalid('reads', `reads is between 1 and ${top}`);
  if (writes < 1 || writes > top) throw ApiError.invalid('writes', `writes is between 1 and ${top}`);
  return guards.benchmark(session.code, () => runBenchmark(session, limits, guards, reads, writes));
}

async function runBenchmark(session, limits, guards, reads, writes) {
  const tag = crypto.randomBytes(4).toString('hex');
  const password = await session.hasher.hash('benchmark-password');
  const ids = [];
  let writeFigures;
  let dbFigures;
  let cachedFigures;
  try {
    let lat = [];
    let wall = now();
    for (let i = 0; i < writes; i++) {
      const name = `bench-${tag}-${i}`;
      const row = { username: name, username_key: name, email: `${name}@bench.invalid`, email_key: `${name}@bench.invalid`, full_name: '', password, now: 0 };
      const t = now();
      ids.push(await store(() => session.store.insert(row)));
      lat.push(now() - t);
    }
    writeFigures = figures(lat, now() - wall);

    lat = [];
    wall = now();
    for (let i = 0; i < reads; i++) {
      const t = now();
      await store(() => session.store.get(ids[i % ids.length]));
      lat.push(now() - t);
    }
    dbFigures = figures(lat, now() - wall);

    // Reads through the cache: the first read of each id fills it.
    const trace = new Trace();
    for (const id of ids.slice(0, reads)) await quiet(() => session.get(id, trace));
    lat = [];
    const cycle = Math.min(ids.length, reads);
    wall = now();
    for (let i = 0; i < reads; i++) {
      const t = now();
      await quiet(() => session.get(ids[i % cycle], trace));
      lat.push(now() - t);
    }
    cachedFigures = figures(lat, now() - wall);
  } finally {
    const trace = new Trace();
    for (const id of ids) await quiet(() => session.delete(id, trace));
  }

  const hashing = [];
  for (const mode of MODES) {
    const h = new Hasher(mode, limits.bcryptCost, 'benchmark-pepper', guards);
    const lat = [];
    for (let i = 0; i < 3; i++) {
      const t = now();
      await h.hash('correct horse battery');
      lat.push(now() - t);
    }
    hashing.push({ mode, ms: figures(lat, 0).p50_ms });
  }
  return { writes: writeFigures, db_reads: dbFigures, cached_reads: cachedFigures, cache_engine: session.cache.engine, password_hashing: hashing };
}

module.exports = { overview, benchmark, figures };
