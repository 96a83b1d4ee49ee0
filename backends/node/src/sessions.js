'use strict';
// The sessions this instance serves, and their open connections (CONTRACT.md §3, §14). Each
// request names its session; the instance fetches the session's stack descriptor from control,
// opens its store and cache once and keeps them while the session is used. The set is bounded
// (maxSessions, least recently used closed first), idle sessions are closed by a sweep, and a
// descriptor is fetched again after descriptorTtlMs, so a session control has ended stops being
// served even if nobody told this instance. Opening is one promise per session: a burst of
// first requests for one session fetches and opens it once.

const http = require('node:http');
const { ApiError } = require('./errors');
const { openSession, logId } = require('./service');

const CONTROL_TIMEOUT_MS = 5000;

class ControlStacks {
  #credential;

  constructor(base, credential) {
    this.base = new URL(base.replace(/\/+$/, ''));
    this.#credential = credential;
  }

  request(method, path, body) {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
      const headers = { authorization: `Bearer ${this.#credential}` };
      if (data) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = data.length;
      }
      const req = http.request({
        host: this.base.hostname.replace(/^\[|\]$/g, ''), port: this.base.port || 80,
        path: `${this.base.pathname.replace(/\/$/, '')}${path}`, method, headers, timeout: CONTROL_TIMEOUT_MS,
      }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${CONTROL_TIMEOUT_MS} ms`)));
      req.on('error', reject);
      req.end(data || undefined);
    });
  }

  // The session's descriptor, or null when control does not know the session.
  async fetch(code) {
    let res;
    try {
      res = await this.request('GET', `/admin/stacks/${code}`);
    } catch (e) {
      throw ApiError.unavailable('control', `cannot reach control at ${this.base.host}: ${e.message}`);
    }
    if (res.status === 404 || res.status === 410) return null;
    if (res.status !== 200) throw ApiError.unavailable('control', `control answered ${res.status}`);
    let d;
    try {
      d = JSON.parse(res.body.toString('utf8'));
      checkDescriptor(d);
    } catch (e) {
      throw ApiError.unavailable('control', `bad stack descriptor: ${e.message}`);
    }
    return d;
  }

  // Best effort: the session keeps its policy on another instance and after a restart.
  async cachePolicyChanged(code, policy) {
    try {
      const res = await this.request('PUT', `/admin/stacks/${code}/cache-policy`, { policy });
      if (res.status >= 300) console.error(`control did not record the cache policy change: status ${res.status}`);
    } catch (e) {
      console.error(`cannot tell control about the cache policy change: ${e.message}`);
    }
  }
}

function checkDescriptor(d) {
  if (!d || typeof d !== 'object' || Array.isArray(d)) throw new Error('not an object');
  if (typeof d.session !== 'string') throw new Error('session is not a string');
  const db = d.database;
  const cache = d.cache;
  if (!db || !['sqlite', 'postgres', 'mysql', 'mongodb'].includes(db.engine) || typeof db.url !== 'string') {
    throw new Error('database.engine or database.url');
  }
  if (!cache || !['memory', 'redis', 'memcached', 'none'].includes(cache.engine)) throw new Error('cache.engine');
}

// Equal descriptors but for cache.policy, which this API itself may have changed.
function sameStack(a, b) {
  const strip = (d) => {
    const c = JSON.parse(JSON.stringify(d));
    if (c.cache) delete c.cache.policy;
    return c;
  };
  return deepEqual(strip(a), strip(b));
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
}

class Sessions {
  constructor(source, config, guards, clock = () => performance.now()) {
    this.source = source;
    this.config = config;
    this.guards = guards;
    this.clock = clock;
    this.open = new Map(); // code -> {session, fetched}
    this.opening = new Map(); // code -> Promise<Session>
  }

  get size() { return this.open.size; }

  fresh(code) {
    const o = this.open.get(code);
    if (o && this.clock() - o.fetched < this.config.descriptorTtlMs) {
      o.session.touch();
      return o.session;
    }
    return null;
  }

  // The session's open stack, opening it if needed.
  get(code) {
    const s = this.fresh(code);
    if (s) return Promise.resolve(s);
    let p = this.opening.get(code);
    if (!p) {
      p = this.refresh(code).finally(() => this.opening.delete(code));
      this.opening.set(code, p);
    }
    return p;
  }

  async refresh(code) {
    const descriptor = await this.source.fetch(code);
    if (!descriptor) {
      await this.close(code);
      throw ApiError.sessionExpired();
    }
    const o = this.open.get(code);
    if (o && sameStack(o.session.descriptor, descriptor)) {
      o.fetched = this.clock();
      o.session.touch();
      return o.session;
    }
    await this.close(code);
    const session = await openSession(descriptor, this.config.limits, this.config.dbConnectionsPerSession, this.guards);
    if (this.open.size >= this.config.maxSessions) {
      let victim = null;
      for (const [k, v] of this.open) if (!victim || v.session.lastUsed < this.open.get(victim).session.lastUsed) victim = k;
      const evicted = this.open.get(victim).session;
      this.open.delete(victim);
      console.error(`session ${logId(victim)} closed: more than ${this.config.maxSessions} sessions open`);
      evicted.close();
    }
    this.open.set(code, { session, fetched: this.clock() });
    return session;
  }

  cachePolicyChanged(code, policy) { return this.source.cachePolicyChanged(code, policy); }

  // Closes a session's connections (it ended, or its stack changed).
  async close(code) {
    const o = this.open.get(code);
    if (!o) return;
    this.open.delete(code);
    await o.session.close();
  }

  // Closes sessions idle longer than sessionIdleMs.
  async sweep() {
    const now = Date.now();
    for (const [code, o] of [...this.open]) {
      if (now - o.session.lastUsed > this.config.sessionIdleMs) {
        console.error(`session ${logId(code)} closed: idle`);
        await this.close(code);
      }
    }
  }

  async closeAll() {
    await Promise.all([...this.open.keys()].map((c) => this.close(c)));
  }
}

module.exports = { Sessions, ControlStacks, sameStack, checkDescriptor };
