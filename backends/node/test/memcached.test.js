'use strict';
// The hand-written Memcached text-protocol client and the adapter over it, against the real
// memcached scripts/test starts (STACKLAB_TEST_MEMCACHED_ADDR), and the key and expiry rules of
// CONTRACT.md §13 as the other runtimes apply them.

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { engine } = require('./helpers');
const { Pool } = require('../src/cache/memcache-client');
const { MemcachedCache, parseAddr, wireKey, logicalKey, exptime, parseDumpLine } = require('../src/cache/memcached');

test('wire keys: plain, ~x hex, ~h sha256, as every runtime spells them', () => {
  assert.equal(wireKey('p:', 'user:1'), 'p:user:1');
  assert.equal(wireKey('p:', 'a b'), 'p:~x612062');
  assert.equal(wireKey('p:', '~x'), 'p:~x7e78');
  assert.equal(wireKey('', ''), '~x');
  const long = 'é'.repeat(100);
  assert.equal(wireKey('p:', long), `p:~h${crypto.createHash('sha256').update(long).digest('hex')}`);
  assert.equal(logicalKey('p:', 'p:~x612062'), 'a b');
  assert.equal(logicalKey('p:', 'p:user:1'), 'user:1');
});

test('exptime: seconds rounded up, at least 1; past 30 days a Unix time', () => {
  assert.equal(exptime(1), 1);
  assert.equal(exptime(1500), 2);
  assert.equal(exptime(300000), 300);
  assert.equal(exptime(31 * 86400 * 1000, 1_000_000_000_000), 1_000_000_000 + 31 * 86400);
});

test('addresses: host:port and memcache:// forms, credentials dropped', () => {
  assert.deepEqual(parseAddr('127.0.0.1:11311'), { host: '127.0.0.1', port: 11311 });
  assert.deepEqual(parseAddr('memcache://u:p@cache.local:11400/x'), { host: 'cache.local', port: 11400 });
  assert.deepEqual(parseAddr('memcached://cache.local'), { host: 'cache.local', port: 11211 });
  assert.deepEqual(parseAddr('[::1]:11211'), { host: '::1', port: 11211 });
  assert.throws(() => parseAddr('redis://x:1'), /not valid/);
  assert.deepEqual(parseDumpLine('key=p%3Auser%3A1 exp=-1 la=1700000000 cas=7 fetch=no cls=1 size=70'),
    { key: 'p:user:1', la: 1700000000, cas: 7, size: 70 });
});

test('the client speaks get, set, delete, stats, mg against memcached', async (t) => {
  const addr = engine(t, 'STACKLAB_TEST_MEMCACHED_ADDR');
  if (!addr) return;
  const { host, port } = parseAddr(addr);
  const pool = new Pool(host, port, { size: 2, timeoutMs: 3000 });
  const key = `nodetest:${crypto.randomBytes(6).toString('hex')}`;
  try {
    assert.equal(await pool.run('get', key), null);
    await pool.run('set', key, 'héllo\r\nEND\r\n', 60);
    assert.equal((await pool.run('get', key)).toString(), 'héllo\r\nEND\r\n');
    const [meta] = await pool.run('metaGets', [key]);
    assert.equal(meta.value.toString(), 'héllo\r\nEND\r\n');
    assert.ok(Number(meta.ttl) > 0 && Number(meta.ttl) <= 60);
    const many = await Promise.all(Array.from({ length: 20 }, (_, i) => pool.run('set', `${key}:${i}`, String(i), 60)));
    assert.equal(many.length, 20);
    assert.equal((await pool.run('get', `${key}:7`)).toString(), '7');
    assert.equal(await pool.run('delete', key), true);
    assert.equal(await pool.run('delete', key), false);
    assert.deepEqual(await pool.run('metaGets', [key]), [null]);
    const stats = await pool.run('stats');
    assert.match(stats.limit_maxbytes, /^\d+$/);
    await assert.rejects(pool.run('get', 'k'.repeat(300)), /CLIENT_ERROR/);
  } finally {
    pool.close();
  }
});

test('the adapter lists only its prefix, newest first, and flushes only its own items', async (t) => {
  const addr = engine(t, 'STACKLAB_TEST_MEMCACHED_ADDR');
  if (!addr) return;
  const a = await MemcachedCache.open({ url: addr, key_prefix: `n${crypto.randomBytes(4).toString('hex')}:`, shared: true });
  const b = await MemcachedCache.open({ url: `memcache://${addr}`, key_prefix: `n${crypto.randomBytes(4).toString('hex')}:`, shared: true });
  try {
    await a.set('user:1', '{"id":1}', 60000);
    await a.set('weird key', 'w', 60000);
    await b.set('user:1', '{"id":1,"b":true}', 60000);
    assert.equal(await a.get('user:1'), '{"id":1}');
    assert.equal(await a.get('user:2'), null);
    const items = await a.items(20);
    assert.deepEqual(items.map((i) => i.key).sort(), ['user:1', 'weird key']);
    const one = items.find((i) => i.key === 'user:1');
    assert.equal(one.value_preview, '{"id":1}');
    assert.ok(one.ttl_ms > 0 && one.ttl_ms <= 60000);
    const s = await a.stats();
    assert.deepEqual([s.hits, s.misses], [1, 1]);
    await a.flush();
    assert.deepEqual(await a.items(20), []);
    assert.equal(await b.get('user:1'), '{"id":1,"b":true}');
    await assert.rejects(a.setPolicy('lru'), /one eviction policy/);
  } finally {
    await b.flush();
    await a.close();
    await b.close();
  }
});

test('a server that is not there is a CacheError naming host:port', async () => {
  await assert.rejects(MemcachedCache.open({ url: '127.0.0.1:9', key_prefix: 'x:' }), /Memcached at 127\.0\.0\.1:9: connect failed/);
});
