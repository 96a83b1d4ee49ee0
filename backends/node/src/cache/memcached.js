'use strict';
// The Memcached cache (CONTRACT.md §13) over memcache-client.js. Keys are `{key_prefix}{key}`;
// a logical key Memcached would not take (not printable ASCII, starting with `~`, too long) is
// stored as `{prefix}~x{hex}`, or `{prefix}~h{sha256 hex}` when even that is too long. Listing
// walks `lru_crawler metadump all` (bounded) and keeps this session's prefix; previews come from
// `mg <key> s t v u`, which does not bump the LRU. Memcached has one eviction policy, LRU, so a
// change is refused.

const crypto = require('node:crypto');
const { CacheError, PolicyRefused } = require('../errors');
const { item, stats, MAX_LISTED_ITEMS } = require('./index');
const { Pool, MemcacheError } = require('./memcache-client');

const MAX_KEY_BYTES = 250;
const MAX_PREFIX_BYTES = 150;
const POOL_SIZE = 4;
const ITEMS_DUMP_BUDGET = 10000;
const FLUSH_DUMP_BUDGET = 1000000;
const TIMEOUT_MS = 3000;
const BUSY_WAIT_MS = 100;
const BUSY_RETRIES = 30;
const DELETE_BATCH = 100;
const RELATIVE_EXPIRY_MAX = 30 * 24 * 3600;

const ONE_POLICY = 'Memcached has one eviction policy, LRU, and it cannot be switched: items are grouped by ' +
  'size into slab classes, each class keeps its own segmented LRU (hot, warm and cold), and ' +
  'when memory runs out the least recently used item of the class being written to is ' +
  'evicted. A key prefix keeps this session\'s keys apart by name only: on a shared server ' +
  'other sessions\' items compete for the same memory and can push this session\'s items out.';

const printable = (b) => [...b].every((x) => x >= 0x21 && x <= 0x7e);

// `host:port`, `memcache://[user:pass@]host:port[/…]` (also memcached://, memcache+tcp://);
// credentials dropped (never used, never in a message); the port defaults to 11211.
function parseAddr(url) {
  const invalid = new CacheError('the Memcached address is not valid; expected host:port or memcache://host:port');
  let rest = url.trim();
  const sep = rest.indexOf('://');
  if (sep >= 0) {
    if (!['memcache', 'memcached', 'memcache+tcp'].includes(rest.slice(0, sep))) throw invalid;
    rest = rest.slice(sep + 3);
  }
  rest = rest.split('/')[0].split('?')[0];
  const hostPort = rest.slice(rest.lastIndexOf('@') + 1);
  if (!hostPort || /\s/.test(hostPort)) throw invalid;
  const colon = hostPort.lastIndexOf(':');
  const host = colon >= 0 ? hostPort.slice(0, colon) : '';
  const port = colon >= 0 ? hostPort.slice(colon + 1) : '';
  if (host && !host.endsWith(':') && /^\d+$/.test(port) && Number(port) <= 65535) {
    return { host: host.replace(/^\[|\]$/g, ''), port: Number(port) };
  }
  if (hostPort.includes(':') && !hostPort.startsWith('[')) throw invalid;
  return { host: hostPort.replace(/^\[|\]$/g, ''), port: 11211 };
}

function wireKey(prefix, key) {
  const room = MAX_KEY_BYTES - Buffer.byteLength(prefix);
  const raw = Buffer.from(key);
  if (raw.length && raw.length <= room && !key.startsWith('~') && printable(raw)) return prefix + key;
  if (2 + 2 * raw.length <= room) return `${prefix}~x${raw.toString('hex')}`;
  return `${prefix}~h${crypto.createHash('sha256').update(raw).digest('hex')}`;
}

function logicalKey(prefix, wire) {
  const rest = wire.startsWith(prefix) ? wire.slice(prefix.length) : wire;
  if (rest.startsWith('~x') && /^([0-9a-f]{2})*$/.test(rest.slice(2))) {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(rest.slice(2), 'hex'));
    } catch {
      // not a key this adapter wrote
    }
  }
  return rest;
}

// Whole seconds rounded up, at least 1; beyond 30 days a Unix time.
function exptime(ttlMs, nowMs = Date.now()) {
  const secs = Math.max(1, Math.ceil(Math.round(ttlMs) / 1000));
  if (secs <= RELATIVE_EXPIRY_MAX) return secs;
  return Math.min(Math.floor(nowMs / 1000) + secs, 2 ** 32 - 1);
}

// `key=… exp=… la=… cas=… fetch=… cls=… size=…`; null for anything else.
function parseDumpLine(line) {
  const f = {};
  for (const part of line.split(' ')) {
    const eq = part.indexOf('=');
    if (eq > 0) f[part.slice(0, eq)] = part.slice(eq + 1);
  }
  if (f.key === undefined || !/^-?\d+$/.test(f.la || '')) return null;
  let key;
  try {
    key = decodeURIComponent(f.key);
  } catch {
    key = f.key;
  }
  return { key, la: Number(f.la), cas: Number(f.cas || 0), size: Number(f.size || 0) };
}

class MemcachedCache {
  constructor(spec, { host, port }) {
    this.engine = 'memcached';
    this.addr = `${host}:${port}`;
    this.prefix = spec.key_prefix || '';
    this.shared = Boolean(spec.shared);
    this.defaultTtlMs = spec.ttl_ms || 0;
    this.pool = new Pool(host, port, { size: POOL_SIZE, timeoutMs: TIMEOUT_MS });
    this.hits = 0;
    this.misses = 0;
  }

  static async open(spec) {
    const addr = parseAddr(spec.url || '');
    const prefix = Buffer.from(spec.key_prefix || '');
    if (prefix.length > MAX_PREFIX_BYTES || !printable(prefix)) {
      throw new CacheError(`a Memcached key prefix must be printable ASCII without spaces, at most ${MAX_PREFIX_BYTES} bytes; this session's is not`);
    }
    const cache = new MemcachedCache(spec, addr);
    try {
      await cache.pool.run('version');
    } catch (e) {
      cache.pool.close();
      throw cache.unavailable('connect', e);
    }
    return cache;
  }

  unavailable(what, e) { return new CacheError(`Memcached at ${this.addr}: ${what} failed: ${(e && e.message) || e}`); }

  async run(what, ...args) {
    try {
      return await this.pool.run(what, ...args);
    } catch (e) {
      throw this.unavailable(what, e);
    }
  }

  async get(key) {
    const v = await this.run('get', wireKey(this.prefix, key));
    if (v === null) this.misses++;
    else this.hits++;
    return v === null ? null : v.toString('utf8');
  }

  async set(key, value, ttlMs) {
    const ttl = ttlMs || this.defaultTtlMs;
    await this.run('set', wireKey(this.prefix, key), value, ttl ? exptime(ttl) : 0);
  }

  async delete(key) { await this.run('delete', wireKey(this.prefix, key)); }

  // The session's items from a metadump; `complete` false when the budget ran out first.
  async metadump(conn, budget) {
    for (let busy = 0; ;) {
      const r = await conn.exchange('lru_crawler metadump all\r\n', async (c) => {
        const found = [];
        for (let lines = 0; ;) {
          const line = await c.line();
          if (line === 'END') return { found, complete: true };
          if (line.startsWith('BUSY') || line.includes('try again')) return { busy: line };
          if (line.startsWith('ERROR') || line.includes('_ERROR')) throw new CacheError(`Memcached at ${this.addr}: lru_crawler metadump refused: ${line}`);
          const d = parseDumpLine(line);
          if (d && d.key.startsWith(this.prefix)) found.push(d);
          if (++lines >= budget) return { found, complete: false };
        }
      });
      if (!r.busy) return r;
      if (++busy > BUSY_RETRIES) throw new CacheError(`Memcached at ${this.addr}: the LRU crawler stayed busy: ${r.busy}`);
      await new Promise((res) => setTimeout(res, BUSY_WAIT_MS));
    }
  }

  async items(limit) {
    limit = Math.min(limit, MAX_LISTED_ITEMS);
    if (limit <= 0) return [];
    try {
      const { found } = await this.pool.dedicated((c) => this.metadump(c, ITEMS_DUMP_BUDGET));
      found.sort((a, b) => b.la - a.la || b.cas - a.cas);
      const top = found.slice(0, limit);
      if (!top.length) return [];
      const got = await this.run('metaGets', top.map((d) => d.key));
      const out = [];
      top.forEach((d, i) => {
        const g = got[i];
        if (!g) return; // gone since the dump
        const ttl = g.ttl !== null && /^-?\d+$/.test(g.ttl) && Number(g.ttl) >= 0 ? Number(g.ttl) * 1000 : null;
        out.push(item(logicalKey(this.prefix, d.key), ttl, d.size, g.value));
      });
      return out;
    } catch (e) {
      if (e instanceof CacheError) throw e;
      throw this.unavailable('lru_crawler metadump', e);
    }
  }

  async stats() {
    const got = await this.run('stats');
    const num = (k) => (/^\d+$/.test(got[k] || '') ? Number(got[k]) : 0);
    return stats(this.hits, this.misses, num('evictions'), num('bytes'), num('limit_maxbytes'));
  }

  async policy() { return { policy: 'lru', policies: ['lru'], changeable: false, note: ONE_POLICY }; }

  async setPolicy() { throw new PolicyRefused(ONE_POLICY); }

  // Deletes the session's items a metadump finds; flush_all would empty the whole server.
  async flush() {
    if (!this.prefix && this.shared) {
      throw new PolicyRefused("this session has no key prefix on a shared Memcached: a flush would delete other sessions' items");
    }
    try {
      const { found } = await this.pool.dedicated((c) => this.metadump(c, FLUSH_DUMP_BUDGET));
      for (let i = 0; i < found.length; i += DELETE_BATCH) {
        await Promise.all(found.slice(i, i + DELETE_BATCH).map((d) => this.pool.run('delete', d.key)));
      }
    } catch (e) {
      if (e instanceof CacheError) throw e;
      throw this.unavailable('delete', e);
    }
  }

  async close() { this.pool.close(); }
}

module.exports = { MemcachedCache, parseAddr, wireKey, logicalKey, exptime, parseDumpLine, MemcacheError };
