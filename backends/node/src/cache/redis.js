'use strict';
// The Redis cache (node-redis 4), CONTRACT.md §13. Keys are `{key_prefix}{key}`, so sessions
// sharing a server stay apart; listing and flushing are `SCAN MATCH {prefix}*`, never KEYS or
// FLUSHDB. Policies are the server's own maxmemory-policy: a session with a server of its own
// may change it (and gets maxmemory set to its max_bytes); on a shared server a change would
// apply to every session, so it is refused. One multiplexed connection per session; every
// command has TIMEOUT_MS.

const { CacheError, PolicyRefused, UnknownPolicy } = require('../errors');
const { item, stats, MAX_LISTED_ITEMS, PREVIEW_BYTES } = require('./index');

const POLICIES = ['noeviction', 'allkeys-lru', 'allkeys-lfu', 'allkeys-random',
  'volatile-lru', 'volatile-lfu', 'volatile-random', 'volatile-ttl'];
const ITEMS_SCAN_BUDGET = 5000;
const SCAN_COUNT = 500;
const UNLINK_BATCH = 500;
const TIMEOUT_MS = 3000;

const SHARED_REFUSAL = 'this Redis server is shared by other sessions: its maxmemory-policy applies to every key ' +
  'on it, so changing it would change eviction for everyone. Start a session with its own ' +
  'Redis to try the policies';
const CONFIG_DENIED = 'the Redis user may not run CONFIG (an ACL or a managed service), so the maxmemory-policy ' +
  'in force cannot be read or changed from here';
const MEANING = {
  noeviction: 'noeviction: when full, writes fail and nothing is evicted',
  'allkeys-lru': 'allkeys-lru: when full, evicts the (approximately) least recently used key',
  'allkeys-lfu': 'allkeys-lfu: when full, evicts the (approximately) least frequently used key',
  'allkeys-random': 'allkeys-random: when full, evicts a random key',
  'volatile-lru': 'volatile-lru: when full, evicts the least recently used key among those with a TTL',
  'volatile-lfu': 'volatile-lfu: when full, evicts the least frequently used key among those with a TTL',
  'volatile-random': 'volatile-random: when full, evicts a random key among those with a TTL',
  'volatile-ttl': 'volatile-ttl: when full, evicts the key with a TTL closest to expiry',
};

function parsePolicy(name) {
  const p = name.trim().toLowerCase();
  if (!POLICIES.includes(p)) throw new UnknownPolicy('Redis', name, POLICIES);
  return p;
}

const escapeGlob = (prefix) => prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
const denied = (e) => /NOPERM|unknown command/i.test(String(e && e.message));

function withTimeout(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS); }),
  ]).finally(() => clearTimeout(timer));
}

function infoField(text, name) {
  const m = new RegExp(`^${name}:(\\d+)`, 'm').exec(text || '');
  return m ? Number(m[1]) : 0;
}

class RedisCache {
  constructor(client, spec, endpoint) {
    this.engine = 'redis';
    this.client = client;
    this.endpoint = endpoint;
    this.prefix = spec.key_prefix || '';
    this.pattern = `${escapeGlob(this.prefix)}*`;
    this.shared = Boolean(spec.shared);
    this.wanted = (spec.policy || '').trim().toLowerCase();
    this.defaultTtlMs = spec.ttl_ms || 0;
    this.hits = 0;
    this.misses = 0;
  }

  static async open(spec) {
    const wanted = (spec.policy || '').trim();
    if (wanted) parsePolicy(wanted);
    let endpoint;
    let client;
    try {
      const u = new URL(spec.url || '');
      if (!['redis:', 'rediss:'].includes(u.protocol) || !u.hostname) throw new Error('scheme');
      endpoint = `${u.hostname}:${u.port || 6379}`;
      const { createClient } = require('redis');
      let connected = false;
      client = createClient({
        url: spec.url,
        disableOfflineQueue: true,
        socket: {
          connectTimeout: TIMEOUT_MS,
          // The first connection fails at once (the session is then 503); later drops are
          // retried in the background while commands fail fast.
          reconnectStrategy: (retries) => (connected ? Math.min(50 * retries, 1000) : new Error('cannot connect')),
        },
      });
      client.on('error', () => {});
      client.on('ready', () => { connected = true; });
    } catch {
      // The parser's messages may quote the URL, so they are not passed on.
      throw new CacheError('the Redis URL is not valid; expected redis://[user:password@]host:port[/db]');
    }
    const cache = new RedisCache(client, spec, endpoint);
    try {
      await withTimeout(client.connect(), 'connect');
      await withTimeout(client.ping(), 'PING');
    } catch (e) {
      await cache.close();
      throw cache.unavailable('connect', e);
    }
    if (!cache.shared) {
      if (spec.max_bytes > 0) await cache.configure('maxmemory', String(spec.max_bytes));
      if (cache.wanted) await cache.configure('maxmemory-policy', cache.wanted);
    }
    return cache;
  }

  unavailable(what, e) { return new CacheError(`Redis at ${this.endpoint}: ${what} failed: ${(e && e.message) || e}`); }

  async cmd(what, args) {
    try {
      return await withTimeout(this.client.sendCommand(args), what);
    } catch (e) {
      throw this.unavailable(what, e);
    }
  }

  // Each reply as it came, errors included, so one refused command does not hide the others.
  replies(commands) {
    return withTimeout(Promise.all(commands.map((c) => this.client.sendCommand(c).catch((e) => e))), 'pipeline')
      .catch((e) => { throw this.unavailable('pipeline', e); });
  }

  async configure(name, value) {
    try {
      await withTimeout(this.client.sendCommand(['CONFIG', 'SET', name, value]), 'CONFIG SET');
    } catch (e) {
      if (!denied(e)) throw this.unavailable('CONFIG SET', e);
      console.error(`cannot set Redis ${name} at ${this.endpoint}: ${e.message}`);
    }
  }

  async configGet(name) {
    const got = await withTimeout(this.client.sendCommand(['CONFIG', 'GET', name]), 'CONFIG GET');
    return Array.isArray(got) && got.length >= 2 ? String(got[1]) : null;
  }

  async get(key) {
    const v = await this.cmd('GET', ['GET', this.prefix + key]);
    if (v === null || v === undefined) this.misses++;
    else this.hits++;
    return v === null || v === undefined ? null : String(v);
  }

  async set(key, value, ttlMs) {
    const ttl = ttlMs || this.defaultTtlMs;
    await this.cmd('SET', ttl ? ['SET', this.prefix + key, value, 'PX', String(Math.max(1, Math.round(ttl)))] : ['SET', this.prefix + key, value]);
  }

  async delete(key) { await this.cmd('DEL', ['DEL', this.prefix + key]); }

  async scan(cursor) {
    const [next, keys] = await this.cmd('SCAN', ['SCAN', String(cursor), 'MATCH', this.pattern, 'COUNT', String(SCAN_COUNT)]);
    return [String(next), keys.map(String)];
  }

  async items(limit) {
    limit = Math.min(limit, MAX_LISTED_ITEMS);
    if (limit <= 0) return [];
    const keys = new Set();
    let cursor = '0';
    let examined = 0;
    do {
      const [next, page] = await this.scan(cursor);
      page.forEach((k) => keys.add(k));
      cursor = next;
      examined += SCAN_COUNT;
    } while (cursor !== '0' && examined < ITEMS_SCAN_BUDGET);
    const sorted = [...keys].sort();
    const r = await this.replies(sorted.flatMap((k) => [['OBJECT', 'IDLETIME', k], ['PTTL', k]]));
    const BIG = Number.MAX_SAFE_INTEGER;
    const ranked = [];
    sorted.forEach((k, i) => {
      const idle = r[2 * i];
      const pttl = r[2 * i + 1];
      if (typeof pttl !== 'number' || pttl === -2) return; // gone since the scan
      ranked.push({ idle: typeof idle === 'number' ? idle : BIG, pttl, k });
    });
    const left = (p) => (p < 0 ? BIG : p);
    ranked.sort((a, b) => a.idle - b.idle || left(b.pttl) - left(a.pttl) || (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
    const top = ranked.slice(0, limit);
    const more = await this.replies(top.flatMap(({ k }) => [['MEMORY', 'USAGE', k], ['STRLEN', k], ['GETRANGE', k, '0', String(PREVIEW_BYTES - 1)]]));
    return top.map(({ k, pttl }, i) => {
      const [usage, strlen, value] = more.slice(3 * i, 3 * i + 3);
      const size = typeof usage === 'number' ? usage : typeof strlen === 'number' ? strlen : 0;
      const logical = k.startsWith(this.prefix) ? k.slice(this.prefix.length) : k;
      return item(logical, pttl >= 0 ? pttl : null, size, typeof value === 'string' ? value : '');
    });
  }

  async stats() {
    const infoStats = await this.cmd('INFO', ['INFO', 'stats']);
    const infoMemory = await this.cmd('INFO', ['INFO', 'memory']);
    let maxBytes = 0;
    try {
      maxBytes = Number(await this.configGet('maxmemory')) || 0;
    } catch (e) {
      if (!denied(e)) throw this.unavailable('CONFIG GET', e);
    }
    return stats(this.hits, this.misses, infoField(infoStats, 'evicted_keys'), infoField(infoMemory, 'used_memory'), maxBytes);
  }

  async policy() {
    let policy;
    try {
      policy = (await this.configGet('maxmemory-policy')) || '';
    } catch (e) {
      if (!denied(e)) throw this.unavailable('CONFIG GET', e);
      return { policy: this.wanted || 'unknown', policies: [...POLICIES], changeable: false, note: this.shared ? SHARED_REFUSAL : CONFIG_DENIED };
    }
    const note = this.shared ? SHARED_REFUSAL : MEANING[policy] || 'a policy this adapter does not know';
    return { policy, policies: [...POLICIES], changeable: !this.shared, note };
  }

  async setPolicy(name) {
    const p = parsePolicy(name);
    if (this.shared) throw new PolicyRefused(SHARED_REFUSAL);
    try {
      await withTimeout(this.client.sendCommand(['CONFIG', 'SET', 'maxmemory-policy', p]), 'CONFIG SET');
    } catch (e) {
      if (denied(e)) throw new PolicyRefused(CONFIG_DENIED);
      throw this.unavailable('CONFIG SET', e);
    }
  }

  // Scans to the end (every key of the session must go), unlinking page by page.
  async flush() {
    if (!this.prefix && this.shared) {
      throw new PolicyRefused("this session has no key prefix on a shared Redis: a flush would delete other sessions' keys");
    }
    let cursor = '0';
    do {
      const [next, keys] = await this.scan(cursor);
      for (let i = 0; i < keys.length; i += UNLINK_BATCH) await this.cmd('UNLINK', ['UNLINK', ...keys.slice(i, i + UNLINK_BATCH)]);
      cursor = next;
    } while (cursor !== '0');
  }

  async close() {
    try {
      await this.client.disconnect();
    } catch {
      // a connection that never opened, or died: gone either way
    }
  }
}

module.exports = { RedisCache, POLICIES, parsePolicy, escapeGlob };
