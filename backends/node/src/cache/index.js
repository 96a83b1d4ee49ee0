'use strict';
// Cache adapters behind one interface (CONTRACT.md §13): in-process, Redis, Memcached, none.
// The service speaks logical keys (`user:42`); Redis and Memcached put the session's key_prefix
// in front. Hits and misses are counted by the adapter for this session; evictions and memory
// come from the engine.
//
//   get(key) -> string | null     set(key, value, ttlMs)     delete(key)
//   items(limit) -> [{key, ttl_ms, bytes, value_preview}]    stats() -> {hits, misses, …}
//   policy() -> {policy, policies, changeable, note}          setPolicy(name)   flush()   close()

const { PolicyRefused } = require('../errors');

const MAX_LISTED_ITEMS = 20;
const PREVIEW_BYTES = 120;

// The first 120 bytes of a value as lossy UTF-8.
function preview(value) {
  const b = Buffer.isBuffer(value) ? value : Buffer.from(value);
  return b.subarray(0, PREVIEW_BYTES).toString('utf8');
}

const item = (key, ttlMs, bytes, value) => ({ key, ttl_ms: ttlMs, bytes, value_preview: preview(value) });
const stats = (hits = 0, misses = 0, evictions = 0, bytes = 0, maxBytes = 0) => ({ hits, misses, evictions, bytes, max_bytes: maxBytes });

class NoCache {
  constructor() { this.engine = 'none'; }
  async get() { return null; }
  async set() {}
  async delete() {}
  async items() { return []; }
  async stats() { return stats(); }
  async policy() { return { policy: 'none', policies: [], changeable: false, note: 'no cache: every read goes to the database' }; }
  async setPolicy() { throw new PolicyRefused('this session has no cache, so there is no policy to change'); }
  async flush() {}
  async close() {}
}

async function connect(spec) {
  switch (spec.engine) {
    case 'none': return new NoCache();
    case 'memory': return require('./memory').MemoryCache.fromSpec(spec);
    case 'redis': return require('./redis').RedisCache.open(spec);
    default: return require('./memcached').MemcachedCache.open(spec);
  }
}

module.exports = { connect, NoCache, item, stats, preview, MAX_LISTED_ITEMS, PREVIEW_BYTES };
