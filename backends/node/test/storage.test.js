'use strict';
// The store adapters on every engine scripts/test starts (a fresh database each), and the
// Redis adapter: the formats of CONTRACT.md §10 and §13 as this runtime writes them. The
// conformance suite checks the same rows through the HTTP API and across runtimes.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { engine } = require('./helpers');
const storage = require('../src/storage');
const { Conflict } = require('../src/errors');
const { RedisCache } = require('../src/cache/redis');

const name = () => `stacklab_node_${crypto.randomBytes(5).toString('hex')}`;

async function fresh(t, kind) {
  if (kind === 'sqlite') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stacklab-node-store-'));
    return { spec: { engine: 'sqlite', url: `sqlite://${dir}/db.sqlite?mode=rwc` }, drop: async () => fs.rmSync(dir, { recursive: true }) };
  }
  if (kind === 'postgres') {
    const admin = engine(t, 'STACKLAB_TEST_POSTGRES_URL');
    if (!admin) return null;
    const pg = require('pg');
    const db = name();
    const c = new pg.Client({ connectionString: admin });
    await c.connect();
    await c.query(`CREATE DATABASE "${db}"`);
    await c.end();
    const u = new URL(admin);
    u.pathname = `/${db}`;
    return {
      spec: { engine: 'postgres', url: u.toString() },
      drop: async () => { const d = new pg.Client({ connectionString: admin }); await d.connect(); await d.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`); await d.end(); },
    };
  }
  if (kind === 'mysql') {
    const admin = engine(t, 'STACKLAB_TEST_MYSQL_URL');
    if (!admin) return null;
    const mysql = require('mysql');
    const db = name();
    const u = new URL(admin);
    const q = (sql) => new Promise((resolve, reject) => {
      const c = mysql.createConnection({ host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) });
      c.query(sql, (e) => { c.end(); if (e) reject(e); else resolve(); });
    });
    await q(`CREATE DATABASE \`${db}\``);
    u.pathname = `/${db}`;
    return { spec: { engine: 'mysql', url: u.toString() }, drop: () => q(`DROP DATABASE IF EXISTS \`${db}\``) };
  }
  const url = process.env.STACKLAB_TEST_MONGO_URL;
  if (!url) {
    t.skip('STACKLAB_TEST_MONGO_URL is not set');
    return null;
  }
  const db = name();
  return { spec: { engine: 'mongodb', url, database: db }, drop: async () => {} };
}

const row = (n, over = {}) => ({
  username: `User${n}`, username_key: `user${n}`, email: `u${n}@example.com`, email_key: `u${n}@example.com`,
  full_name: '', password: 'x', now: 1733100000000 + n, ...over,
});

for (const kind of ['sqlite', 'postgres', 'mysql', 'mongodb']) {
  test(`the ${kind} store: insert, read, search, update, delete, conflicts, stats`, async (t) => {
    const f = await fresh(t, kind);
    if (!f) return;
    const store = await storage.connect(f.spec, 2);
    try {
      const a = await store.insert(row(1));
      const b = await store.insert(row(2, { email: 'b%_!@example.com', email_key: 'b%_!@example.com' }));
      assert.ok(a > 0 && b > a);
      assert.deepEqual(await store.get(a), {
        id: a, username: 'User1', email: 'u1@example.com', full_name: '', password: 'x',
        created_at: 1733100000001, updated_at: 1733100000001,
      });
      assert.equal(await store.get(b + 100), null);
      // LIKE's wildcards and MongoDB's regex syntax match literally.
      let s = await store.search({ lower: '%_!', emailIndex: null }, 10, 0);
      assert.deepEqual([s.total, s.rows.map((r) => r.id)], [1, [b]]);
      s = await store.search({ lower: 'user', emailIndex: null }, 1, 1);
      assert.deepEqual([s.total, s.rows.map((r) => r.id)], [2, [b]]);
      s = await store.search({ lower: 'zzz', emailIndex: 'u1@example.com' }, 10, 0);
      assert.deepEqual(s.rows.map((r) => r.id), [a]);
      await assert.rejects(store.insert(row(3, { email_key: 'u1@example.com' })), (e) => e instanceof Conflict && e.field === 'email');
      await assert.rejects(store.insert(row(3, { username_key: 'user1' })), (e) => e instanceof Conflict && e.field === 'username');
      // A username holding the word "email" is still a username conflict.
      await store.insert(row(4, { username_key: 'email' }));
      await assert.rejects(store.insert(row(5, { username_key: 'email' })), (e) => e instanceof Conflict && e.field === 'username');
      const u = await store.update(a, { now: 1733200000000, full_name: 'Ann', username: ['Ann', 'ann'] });
      assert.deepEqual([u.username, u.full_name, u.updated_at, u.created_at], ['Ann', 'Ann', 1733200000000, 1733100000001]);
      await assert.rejects(store.update(a, { now: 1, email: ['x', 'b%_!@example.com'] }), (e) => e instanceof Conflict && e.field === 'email');
      assert.equal(await store.update(b + 100, { now: 1 }), null);
      assert.equal(await store.delete(a), true);
      assert.equal(await store.delete(a), false);
      const st = await store.stats();
      assert.equal(st.engine, kind);
      assert.equal(st.rows, 2);
      assert.ok(st.size_bytes > 0, JSON.stringify(st));
    } finally {
      await store.close();
      await f.drop();
    }
  });
}

test('a store that cannot be reached names the engine and host, never the URL', async () => {
  await assert.rejects(storage.connect({ engine: 'postgres', url: 'postgres://u:secretpw@127.0.0.1:9/x' }, 1),
    (e) => /PostgreSQL/.test(e.message) && !e.message.includes('secretpw'));
  await assert.rejects(storage.connect({ engine: 'sqlite', url: 'sqlite:///nonexistent/dir/x.db' }, 1), /SQLite/);
});

test('the Redis cache: prefixed keys, TTLs, listing, a policy change, a flush of its own keys', async (t) => {
  const url = engine(t, 'STACKLAB_TEST_REDIS_URL');
  if (!url) return;
  const prefix = `${name()}:`;
  const c = await RedisCache.open({ url, key_prefix: prefix, shared: false, policy: 'allkeys-lru' });
  const other = await RedisCache.open({ url, key_prefix: `${name()}:`, shared: true });
  try {
    await c.set('user:1', '{"id":1}', 60000);
    await c.set('user:2', '{"id":2}', 0);
    await other.set('user:1', 'theirs', 60000);
    assert.equal(await c.get('user:1'), '{"id":1}');
    assert.equal(await c.get('user:3'), null);
    const items = await c.items(20);
    assert.deepEqual(items.map((i) => i.key).sort(), ['user:1', 'user:2']);
    assert.equal(items.find((i) => i.key === 'user:2').ttl_ms, null);
    assert.ok(items.find((i) => i.key === 'user:1').ttl_ms > 59000);
    assert.equal((await c.policy()).policy, 'allkeys-lru');
    await c.setPolicy('allkeys-lfu');
    assert.equal((await c.policy()).policy, 'allkeys-lfu');
    await assert.rejects(other.setPolicy('allkeys-lfu'), /shared/);
    await assert.rejects(c.setPolicy('lru'), /not a policy of Redis/);
    const s = await c.stats();
    assert.deepEqual([s.hits, s.misses], [1, 1]);
    await c.flush();
    assert.deepEqual(await c.items(20), []);
    assert.equal(await other.get('user:1'), 'theirs');
  } finally {
    await c.setPolicy('noeviction').catch(() => {});
    await other.flush();
    await c.close();
    await other.close();
  }
});
