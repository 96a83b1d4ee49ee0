'use strict';
// The users service: the one place that decides what REST and GraphQL do, so they cannot
// drift (CONTRACT.md §6, §13). Reads go to the cache first, then to the database, and fill the
// cache; writes follow the session's write policy — cache-aside drops the entry, write-through
// replaces it. The cache holds a user in its stored form (hashes, ciphertext), byte for byte
// the JSON every runtime writes, so one runtime's entry is a hit for another.
//
// Each call records into a Trace: time spent in the cache and the database, and the cache
// outcome, which the HTTP layer turns into Server-Timing and x-stacklab-cache. A failing cache
// never fails a request: it is logged, and a failed read counts as a miss.

const crypto = require('node:crypto');
const { ApiError, CacheError, Conflict, StoreError, fromCacheError } = require('./errors');
const { rules, chars } = require('./config');
const { FieldCrypto } = require('./crypto');
const { Hasher } = require('./passwords');
const caches = require('./cache');
const storage = require('./storage');

const DEFAULT_TTL_MS = 300000;

class Trace {
  constructor() {
    this.cacheMs = 0;
    this.dbMs = 0;
    this.outcome = null;
  }

  // A miss anywhere makes the request a miss; an earlier bypass stays; else the latest.
  record(outcome) {
    if (this.outcome === 'miss' || outcome === 'miss') this.outcome = 'miss';
    else if (this.outcome !== 'bypass') this.outcome = outcome;
  }
}

const nowMs = () => Date.now();
// How a session is named in logs: never the code itself (it is the session's cookie).
const logId = (code) => crypto.createHash('sha256').update(code).digest('hex').slice(0, 8);

// serde's field order and compact form (JSON.stringify keeps insertion order).
function cachedJson(u) {
  return JSON.stringify({
    id: u.id, username: u.username, email: u.email, full_name: u.full_name,
    password: u.password, created_at: u.created_at, updated_at: u.updated_at,
  });
}

function fromCache(raw) {
  let d;
  try {
    d = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!d || typeof d !== 'object' || Array.isArray(d)) return null;
  if (!['id', 'created_at', 'updated_at'].every((k) => Number.isInteger(d[k]))) return null;
  if (!['username', 'email', 'full_name', 'password'].every((k) => typeof d[k] === 'string')) return null;
  return {
    id: d.id, username: d.username, email: d.email, full_name: d.full_name,
    password: d.password, created_at: d.created_at, updated_at: d.updated_at,
  };
}

const elapsed = (t) => Number(process.hrtime.bigint() - t) / 1e6;

class Session {
  constructor(descriptor, store, cache, limits, guards) {
    this.descriptor = descriptor;
    this.code = descriptor.session;
    this.store = store;
    this.cache = cache;
    this.limits = limits;
    this.guards = guards;
    this.writeThrough = descriptor.write_policy === 'write-through';
    this.crypto = descriptor.encryption === 'aes-256-gcm' ? new FieldCrypto(descriptor.encryption_key || '') : null;
    this.hasher = new Hasher(descriptor.password_storage || 'argon2id', limits.bcryptCost, descriptor.pepper || '', guards);
    const ttl = (descriptor.cache && descriptor.cache.ttl_ms) || 0;
    this.ttlMs = ttl || DEFAULT_TTL_MS;
    this.lastUsed = Date.now();
  }

  touch() { this.lastUsed = Date.now(); }

  async close() {
    for (const part of [this.store, this.cache]) {
      try {
        await part.close();
      } catch (e) {
        console.error(`closing a part of session ${logId(this.code)} failed: ${e.message}`);
      }
    }
  }

  seal(v) { return this.crypto ? this.crypto.seal(v) : v; }

  emailKey(lower) { return this.crypto ? this.crypto.index(lower) : lower; }

  toUser(s) {
    let email = s.email;
    let fullName = s.full_name;
    if (this.crypto) {
      email = this.crypto.open(s.email);
      fullName = s.full_name ? this.crypto.open(s.full_name) : '';
    }
    return {
      id: s.id, username: s.username, email, full_name: fullName,
      stored_password: s.password, stored_email: s.email, created_at: s.created_at, updated_at: s.updated_at,
    };
  }

  async db(trace, fn) {
    const t = process.hrtime.bigint();
    try {
      return await fn(this.store);
    } catch (e) {
      if (e instanceof Conflict) throw e;
      if (e instanceof StoreError) throw ApiError.unavailable('the database', e.message);
      throw e;
    } finally {
      trace.dbMs += elapsed(t);
    }
  }

  async cacheStep(trace, what, fn) {
    const t = process.hrtime.bigint();
    try {
      return await fn(this.cache);
    } catch (e) {
      if (!(e instanceof CacheError)) throw e;
      console.error(`session ${logId(this.code)}: cache ${what} failed: ${e.message}`);
      return null;
    } finally {
      trace.cacheMs += elapsed(t);
    }
  }

  cachePut(u, trace) { return this.cacheStep(trace, 'write', (c) => c.set(`user:${u.id}`, cachedJson(u), this.ttlMs)); }

  cacheDrop(id, trace) { return this.cacheStep(trace, 'delete', (c) => c.delete(`user:${id}`)); }

  conflict(e, username, email) {
    return e.field === 'email' ? ApiError.conflict('email', email) : ApiError.conflict('username', username);
  }

  async create(username, email, password, fullName, trace) {
    const l = this.limits;
    username = rules.username(l, username);
    email = rules.email(l, email);
    rules.password(l, password);
    fullName = fullName === undefined || fullName === null ? '' : rules.fullName(l, fullName);
    const hashed = await this.hasher.hash(password);
    const now = nowMs();
    const row = {
      username, username_key: username.toLowerCase(),
      email: this.seal(email), email_key: this.emailKey(email.toLowerCase()),
      full_name: fullName ? this.seal(fullName) : '', password: hashed, now,
    };
    let id;
    try {
      id = await this.db(trace, (s) => s.insert(row));
    } catch (e) {
      if (e instanceof Conflict) throw this.conflict(e, username, email);
      throw e;
    }
    const stored = {
      id, username, email: row.email, full_name: row.full_name, password: hashed, created_at: now, updated_at: now,
    };
    if (this.writeThrough) await this.cachePut(stored, trace);
    trace.record('bypass');
    return this.toUser(stored);
  }

  // The stored row, cache first; a miss reads the database and fills the cache.
  async load(id, trace) {
    const cached = await this.cacheStep(trace, 'read', (c) => c.get(`user:${id}`));
    if (cached !== null && cached !== undefined) {
      const u = fromCache(cached);
      if (u) {
        trace.record('hit');
        return u;
      }
    }
    trace.record(this.cache.engine === 'none' ? 'bypass' : 'miss');
    const stored = await this.db(trace, (s) => s.get(id));
    if (!stored) throw ApiError.notFound('user', id);
    await this.cachePut(stored, trace);
    return stored;
  }

  async get(id, trace) { return this.toUser(await this.load(id, trace)); }

  async list(q, limit, offset, trace) {
    limit = limit === null || limit === undefined ? 20 : limit;
    offset = offset === null || offset === undefined ? 0 : offset;
    if (limit < 1 || limit > this.limits.maxPage) throw ApiError.invalid('limit', `limit must be between 1 and ${this.limits.maxPage}`);
    if (offset < 0) throw ApiError.invalid('offset', 'offset cannot be negative');
    q = (q || '').trim();
    let search = { lower: null, emailIndex: null };
    if (q) {
      if (chars(q) > this.limits.maxEmail) throw ApiError.invalid('q', `search text is at most ${this.limits.maxEmail} characters`);
      if (q.includes('\0')) throw ApiError.invalid('q', 'search text cannot contain the NUL character');
      const lower = q.toLowerCase();
      search = { lower, emailIndex: this.crypto ? this.crypto.index(lower) : null };
    }
    const { rows, total } = await this.db(trace, (s) => s.search(search, limit, offset));
    trace.record('bypass');
    return { items: rows.map((r) => this.toUser(r)), total, limit, offset };
  }

  async update(id, fields, trace) {
    const l = this.limits;
    const changes = { now: nowMs() };
    let username = '';
    let email = '';
    if (fields.username !== undefined && fields.username !== null) {
      username = rules.username(l, fields.username);
      changes.username = [username, username.toLowerCase()];
    }
    if (fields.email !== undefined && fields.email !== null) {
      email = rules.email(l, fields.email);
      changes.email = [this.seal(email), this.emailKey(email.toLowerCase())];
    }
    if (fields.full_name !== undefined && fields.full_name !== null) {
      const f = rules.fullName(l, fields.full_name);
      changes.full_name = f ? this.seal(f) : '';
    }
    if (fields.password !== undefined && fields.password !== null) {
      rules.password(l, fields.password);
      changes.password = await this.hasher.hash(fields.password);
    }
    let stored;
    try {
      stored = await this.db(trace, (s) => s.update(id, changes));
    } catch (e) {
      if (e instanceof Conflict) throw this.conflict(e, username, email);
      throw e;
    }
    if (!stored) throw ApiError.notFound('user', id);
    if (this.writeThrough) await this.cachePut(stored, trace);
    else await this.cacheDrop(stored.id, trace);
    trace.record('bypass');
    return this.toUser(stored);
  }

  async delete(id, trace) {
    const gone = await this.db(trace, (s) => s.delete(id));
    await this.cacheDrop(id, trace);
    trace.record('bypass');
    if (!gone) throw ApiError.notFound('user', id);
  }

  async verifyPassword(id, password, trace) {
    if (Buffer.byteLength(password) > this.limits.maxPassword) return false;
    const stored = await this.load(id, trace);
    return this.hasher.verify(password, stored.password);
  }
}

// Connects the descriptor's store and cache; an engine that cannot be reached is a 503.
async function openSession(descriptor, limits, dbConnections, guards) {
  const db = descriptor.database;
  let store;
  try {
    store = await storage.connect(db, dbConnections);
  } catch (e) {
    if (e instanceof StoreError) throw ApiError.unavailable(db.engine, e.message);
    throw e;
  }
  let cache;
  try {
    cache = await caches.connect(descriptor.cache);
  } catch (e) {
    await store.close();
    if (e instanceof CacheError) throw fromCacheError(e);
    throw e;
  }
  try {
    return new Session(descriptor, store, cache, limits, guards);
  } catch (e) {
    await store.close();
    await cache.close();
    throw e;
  }
}

module.exports = { Session, Trace, openSession, logId, cachedJson, fromCache };
