'use strict';
// A small Memcached text-protocol client (https://github.com/memcached/memcached/blob/master/doc/protocol.txt):
// no Memcached client is packaged for Node here, and the adapter needs only get, set, delete,
// version, stats, `lru_crawler metadump` and the meta command `mg`. One Connection is one
// socket whose exchanges run one after another; a Pool hands out up to `size` of them. Every
// exchange has a deadline; a connection that missed one, or broke, is dropped.

const net = require('node:net');

const MAX_LINE = 4096;

class MemcacheError extends Error {}

class Connection {
  constructor(host, port, timeoutMs) {
    this.host = host;
    this.port = port;
    this.timeoutMs = timeoutMs;
    this.buf = Buffer.alloc(0);
    this.wake = null;
    this.failure = null;
    this.socket = null;
    this.chain = Promise.resolve();
  }

  connect() {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ host: this.host, port: this.port });
      this.socket = s;
      s.setNoDelay(true);
      const timer = setTimeout(() => { s.destroy(new MemcacheError(`connect timed out after ${this.timeoutMs} ms`)); }, this.timeoutMs);
      s.once('connect', () => { clearTimeout(timer); resolve(this); });
      s.on('data', (d) => { this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d; this.notify(); });
      s.on('error', (e) => { clearTimeout(timer); this.fail(e); reject(e); });
      s.on('close', () => this.fail(new MemcacheError('connection closed')));
    });
  }

  get broken() { return this.failure !== null; }

  fail(e) {
    if (!this.failure) this.failure = e;
    this.notify();
  }

  notify() {
    const w = this.wake;
    this.wake = null;
    if (w) w();
  }

  async more() {
    if (this.failure) throw this.failure;
    await new Promise((resolve) => { this.wake = resolve; });
    if (this.failure && this.buf.length === 0) throw this.failure;
  }

  // The next line, without its CR LF.
  async line() {
    for (;;) {
      const i = this.buf.indexOf('\n');
      if (i >= 0) {
        if (i > MAX_LINE) throw new MemcacheError('line too long');
        const end = i > 0 && this.buf[i - 1] === 13 ? i - 1 : i;
        const text = this.buf.subarray(0, end).toString('utf8');
        this.buf = this.buf.subarray(i + 1);
        return text;
      }
      if (this.buf.length > MAX_LINE) throw new MemcacheError('line too long');
      await this.more();
    }
  }

  // Exactly n bytes.
  async exact(n) {
    while (this.buf.length < n) await this.more();
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  // Sends `data`, then lets `read(conn)` read the reply, within the deadline.
  exchange(data, read) {
    const run = async () => {
      if (this.failure) throw this.failure;
      let timer;
      const deadline = new Promise((_, reject) => {
        timer = setTimeout(() => {
          const e = new MemcacheError(`no answer within ${this.timeoutMs} ms`);
          this.fail(e);
          this.socket.destroy();
          reject(e);
        }, this.timeoutMs);
      });
      try {
        this.socket.write(data);
        return await Promise.race([read(this), deadline]);
      } finally {
        clearTimeout(timer);
      }
    };
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => {});
    return p;
  }

  close() { if (this.socket) this.socket.destroy(); }
}

function check(line) {
  if (line === 'ERROR' || line.startsWith('CLIENT_ERROR') || line.startsWith('SERVER_ERROR')) throw new MemcacheError(line);
  return line;
}

// The commands, each one exchange on a connection.
const commands = {
  async get(conn, key) {
    return conn.exchange(`get ${key}\r\n`, async (c) => {
      let value = null;
      for (;;) {
        const line = check(await c.line());
        if (line === 'END') return value;
        const w = line.split(' ');
        if (w[0] !== 'VALUE' || w.length < 4) throw new MemcacheError(`unexpected reply to get: ${line}`);
        value = (await c.exact(Number(w[3]) + 2)).subarray(0, Number(w[3]));
      }
    });
  },
  async set(conn, key, value, exptime) {
    const data = Buffer.isBuffer(value) ? value : Buffer.from(value);
    const head = Buffer.from(`set ${key} 0 ${exptime} ${data.length}\r\n`);
    return conn.exchange(Buffer.concat([head, data, Buffer.from('\r\n')]), async (c) => {
      const line = check(await c.line());
      if (line !== 'STORED') throw new MemcacheError(`unexpected reply to set: ${line}`);
    });
  },
  async delete(conn, key) {
    return conn.exchange(`delete ${key}\r\n`, async (c) => {
      const line = check(await c.line());
      if (line !== 'DELETED' && line !== 'NOT_FOUND') throw new MemcacheError(`unexpected reply to delete: ${line}`);
      return line === 'DELETED';
    });
  },
  async version(conn) {
    return conn.exchange('version\r\n', async (c) => {
      const line = check(await c.line());
      if (!line.startsWith('VERSION ')) throw new MemcacheError(`unexpected reply to version: ${line}`);
      return line.slice(8);
    });
  },
  async stats(conn) {
    return conn.exchange('stats\r\n', async (c) => {
      const got = {};
      for (;;) {
        const line = check(await c.line());
        if (line === 'END') return got;
        const w = line.split(' ');
        if (w.length < 3 || w[0] !== 'STAT') throw new MemcacheError(`unexpected reply to stats: ${line}`);
        got[w[1]] = w[2];
      }
    });
  },
  // `mg <key> s t v u` for each key (pipelined): [{size, ttl, value}] or null where gone (EN).
  async metaGets(conn, keys) {
    return conn.exchange(keys.map((k) => `mg ${k} s t v u\r\n`).join(''), async (c) => {
      const out = [];
      for (let i = 0; i < keys.length; i++) {
        const line = check(await c.line());
        const w = line.split(' ');
        if (w[0] === 'EN') { out.push(null); continue; }
        if (w[0] !== 'VA' || !/^\d+$/.test(w[1] || '')) throw new MemcacheError(`unexpected reply to mg: ${line}`);
        const n = Number(w[1]);
        const flag = (f) => { const x = w.slice(2).find((v) => v.startsWith(f)); return x === undefined ? null : x.slice(1); };
        const value = (await c.exact(n + 2)).subarray(0, n);
        out.push({ size: Number(flag('s')), ttl: flag('t'), value });
      }
      return out;
    });
  },
};

class Pool {
  constructor(host, port, { size = 4, timeoutMs = 3000 } = {}) {
    this.host = host;
    this.port = port;
    this.size = size;
    this.timeoutMs = timeoutMs;
    this.idle = [];
    this.count = 0;
    this.waiters = [];
    this.closed = false;
  }

  async acquire() {
    while (this.idle.length) {
      const c = this.idle.pop();
      if (!c.broken) return c;
      this.count--;
    }
    if (this.count < this.size) {
      this.count++;
      try {
        return await new Connection(this.host, this.port, this.timeoutMs).connect();
      } catch (e) {
        this.count--;
        throw e;
      }
    }
    return new Promise((resolve, reject) => {
      const w = { resolve };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new MemcacheError('no connection free in time'));
      }, this.timeoutMs);
      this.waiters.push(w);
    });
  }

  release(c) {
    if (c.broken || this.closed) {
      c.close();
      this.count--;
      return;
    }
    const w = this.waiters.shift();
    if (w) { clearTimeout(w.timer); w.resolve(c); } else this.idle.push(c);
  }

  // Runs one command on a pooled connection.
  async run(name, ...args) {
    const c = await this.acquire();
    try {
      return await commands[name](c, ...args);
    } finally {
      this.release(c);
    }
  }

  // A connection of its own (a metadump may be abandoned midway), closed after.
  async dedicated(fn) {
    const c = await new Connection(this.host, this.port, this.timeoutMs).connect();
    try {
      return await fn(c);
    } finally {
      c.close();
    }
  }

  close() {
    this.closed = true;
    for (const c of this.idle) c.close();
    this.idle = [];
  }
}

module.exports = { Pool, Connection, commands, MemcacheError };
