'use strict';
// The in-process cache (CONTRACT.md §13): a Map bounded in bytes (key + value bytes), with an
// eviction policy switchable while it runs — LRU, LFU, FIFO, TTL. One per session per instance;
// the event loop is its only thread, so it needs no lock.
//
// The Map's order is recency (an entry read or written moves to the end), which gives LRU's
// victim and the listing's order directly; the other policies scan for their victim when a
// write does not fit, which at the sizes a session's cache holds (a few thousand entries in
// 1 MiB) costs less than keeping a heap per policy in step. A logical clock ticks once per read
// or write, so ranks never tie. Expired entries are purged before every operation (never
// counted, never returned, not an eviction); a scan runs only once the earliest expiry passed.

const { UnknownPolicy } = require('../errors');
const { item, stats, MAX_LISTED_ITEMS } = require('./index');

const DEFAULT_MAX_BYTES = 1024 * 1024;
const POLICIES = ['lru', 'lfu', 'fifo', 'ttl'];
const MEANING = {
  lru: 'LRU: when full, the entry read or written longest ago is evicted',
  lfu: 'LFU: when full, the entry read or written the fewest times is evicted (the least recently used among equals)',
  fifo: 'FIFO: when full, the entry written first is evicted; reads do not count',
  ttl: 'TTL: when full, the entry closest to expiry is evicted; entries without a TTL go last',
};

function parsePolicy(name) {
  const p = name.trim().toLowerCase();
  if (!POLICIES.includes(p)) throw new UnknownPolicy('the in-process cache', name, POLICIES);
  return p;
}

// Compares two entries' ranks under a policy: negative when `a` goes first.
function before(policy, a, b) {
  switch (policy) {
    case 'lru': return a.touched - b.touched;
    case 'lfu': return a.uses - b.uses || a.touched - b.touched;
    case 'fifo': return a.written - b.written;
    default: {
      const ax = a.expiresAt !== null;
      const bx = b.expiresAt !== null;
      if (ax !== bx) return ax ? -1 : 1;
      if (ax) return a.expiresAt - b.expiresAt || a.written - b.written;
      return a.touched - b.touched;
    }
  }
}

class MemoryCache {
  constructor({ policy = '', maxBytes = 0, defaultTtlMs = 0, clock = () => performance.now() } = {}) {
    this.engine = 'memory';
    this.current = policy.trim() ? parsePolicy(policy) : 'lru';
    this.max = maxBytes || DEFAULT_MAX_BYTES;
    this.defaultTtlMs = defaultTtlMs || 0;
    this.clock = clock;
    this.entries = new Map(); // key -> entry, least recently touched first
    this.bytes = 0;
    this.tick = 0;
    this.nextExpiry = Infinity;
    this.hits = 0;
    this.misses = 0;
    this.evictions = 0;
  }

  static fromSpec(spec) {
    return new MemoryCache({ policy: spec.policy || '', maxBytes: spec.max_bytes || 0, defaultTtlMs: spec.ttl_ms || 0 });
  }

  purge(now) {
    if (now < this.nextExpiry) return;
    let next = Infinity;
    for (const [k, e] of this.entries) {
      if (e.expiresAt === null) continue;
      if (e.expiresAt <= now) this.take(k);
      else next = Math.min(next, e.expiresAt);
    }
    this.nextExpiry = next;
  }

  take(key) {
    const e = this.entries.get(key);
    if (e) {
      this.entries.delete(key);
      this.bytes -= e.size;
    }
    return e;
  }

  put(key, e) {
    this.entries.set(key, e);
    this.bytes += e.size;
    if (e.expiresAt !== null && e.expiresAt < this.nextExpiry) this.nextExpiry = e.expiresAt;
  }

  evictOne() {
    let victim = null;
    let rank = null;
    if (this.current === 'lru') {
      victim = this.entries.keys().next().value;
    } else {
      for (const [k, e] of this.entries) {
        if (rank === null || before(this.current, e, rank) < 0) { victim = k; rank = e; }
      }
    }
    if (victim === undefined || victim === null) return false;
    this.take(victim);
    return true;
  }

  async get(key) { return this.getNow(key); }

  getNow(key) {
    this.purge(this.clock());
    const e = this.take(key);
    if (!e) {
      this.misses++;
      return null;
    }
    this.hits++;
    e.touched = ++this.tick;
    e.uses++;
    this.put(key, e);
    return e.value;
  }

  async set(key, value, ttlMs) { this.setNow(key, value, ttlMs); }

  // ttlMs 0 or absent means the session's ttl_ms, or no expiry when that is 0.
  setNow(key, value, ttlMs) {
    const now = this.clock();
    this.purge(now);
    const ttl = ttlMs || this.defaultTtlMs;
    const previous = this.take(key);
    const size = Buffer.byteLength(key) + Buffer.byteLength(value);
    if (size > this.max) return; // larger than the whole cache; the old value went too
    while (this.bytes + size > this.max && this.evictOne()) this.evictions++;
    const t = ++this.tick;
    this.put(key, {
      value, expiresAt: ttl ? now + ttl : null, written: t, touched: t,
      uses: previous ? previous.uses + 1 : 1, size,
    });
  }

  async delete(key) {
    this.purge(this.clock());
    this.take(key);
  }

  async items(limit) { return this.itemsNow(limit); }

  itemsNow(limit) {
    const now = this.clock();
    this.purge(now);
    const out = [];
    const keys = [...this.entries.keys()].reverse();
    for (const k of keys) {
      if (out.length >= Math.min(limit, MAX_LISTED_ITEMS)) break;
      const e = this.entries.get(k);
      const ttl = e.expiresAt === null ? null : Math.max(0, Math.floor(e.expiresAt - now + 1e-6));
      out.push(item(k, ttl, e.size, e.value));
    }
    return out;
  }

  async stats() {
    this.purge(this.clock());
    return stats(this.hits, this.misses, this.evictions, this.bytes, this.max);
  }

  async policy() {
    return { policy: this.current, policies: [...POLICIES], changeable: true, note: MEANING[this.current] };
  }

  async setPolicy(name) { this.current = parsePolicy(name); }

  async flush() {
    this.entries.clear();
    this.bytes = 0;
    this.nextExpiry = Infinity;
  }

  async close() { await this.flush(); }
}

module.exports = { MemoryCache, POLICIES, parsePolicy };
