'use strict';
// The in-process cache's four policies, its bound, expiry and live switching (CONTRACT.md §13),
// with a clock the test moves.

const test = require('node:test');
const assert = require('node:assert/strict');
const { MemoryCache } = require('../src/cache/memory');

const cache = (policy, maxBytes = 0) => {
  let now = 0;
  const c = new MemoryCache({ policy, maxBytes, clock: () => now });
  c.advance = (ms) => { now += ms; };
  return c;
};
// Each entry is 2 + 8 = 10 bytes; a 30-byte cache holds three.
const v = (s) => s.padEnd(8, '.');
const keys = (c) => c.itemsNow(20).map((i) => i.key);

test('lru evicts the entry read or written longest ago', () => {
  const c = cache('lru', 30);
  c.setNow('k1', v('a'));
  c.setNow('k2', v('b'));
  c.setNow('k3', v('c'));
  c.getNow('k1');
  c.setNow('k4', v('d'));
  assert.deepEqual(keys(c).sort(), ['k1', 'k3', 'k4']);
  assert.equal(c.evictions, 1);
  assert.deepEqual(keys(c), ['k4', 'k1', 'k3']); // newest first
});

test('lfu evicts the fewest uses, the least recently used among equals', () => {
  const c = cache('lfu', 30);
  c.setNow('k1', v('a'));
  c.setNow('k2', v('b'));
  c.setNow('k3', v('c'));
  c.getNow('k1');
  c.getNow('k2');
  c.setNow('k4', v('d'));
  assert.deepEqual(keys(c).sort(), ['k1', 'k2', 'k4']);
  c.setNow('k1', v('e')); // an overwrite adds a use
  c.setNow('k5', v('f')); // k4 (1 use) goes
  assert.deepEqual(keys(c).sort(), ['k1', 'k2', 'k5']);
});

test('fifo evicts the entry written first; reads do not count', () => {
  const c = cache('fifo', 30);
  c.setNow('k1', v('a'));
  c.setNow('k2', v('b'));
  c.setNow('k3', v('c'));
  c.getNow('k1');
  c.setNow('k4', v('d'));
  assert.deepEqual(keys(c).sort(), ['k2', 'k3', 'k4']);
});

test('ttl evicts the earliest expiry; entries without one go last; expired ones are purged', () => {
  const c = cache('ttl', 30);
  c.setNow('k1', v('a'), 5000);
  c.setNow('k2', v('b'), 1000);
  c.setNow('k3', v('c'));
  c.setNow('k4', v('d'), 9000);
  assert.deepEqual(keys(c).sort(), ['k1', 'k3', 'k4']);
  c.advance(5000);
  assert.equal(c.getNow('k1'), null); // expired: a miss, not an eviction
  assert.equal(c.evictions, 1);
  assert.deepEqual(c.itemsNow(20).map((i) => [i.key, i.ttl_ms]), [['k4', 4000], ['k3', null]]);
});

test('switching policy is live and keeps the entries', async () => {
  const c = cache('lru', 30);
  c.setNow('k1', v('a'));
  c.setNow('k2', v('b'));
  c.setNow('k3', v('c'));
  c.getNow('k1');
  await c.setPolicy(' FIFO ');
  assert.equal((await c.policy()).policy, 'fifo');
  c.setNow('k4', v('d'));
  assert.deepEqual(keys(c).sort(), ['k2', 'k3', 'k4']);
  await assert.rejects(c.setPolicy('random'), /not a policy of the in-process cache/);
});

test('a value larger than the whole cache is not kept, and takes its old value with it', async () => {
  const c = cache('lru', 30);
  c.setNow('k1', v('a'));
  c.setNow('k1', 'x'.repeat(40));
  assert.equal(c.getNow('k1'), null);
  const s = await c.stats();
  assert.deepEqual([s.bytes, s.max_bytes, s.hits, s.misses], [0, 30, 0, 1]);
  assert.equal(cache('', 0).max, 1048576);
});

test('the bytes are key plus value bytes, in UTF-8; a flush keeps the counters', async () => {
  const c = cache('lru');
  c.setNow('user:1', 'é');
  c.getNow('user:1');
  assert.equal((await c.stats()).bytes, 6 + 2);
  await c.flush();
  const s = await c.stats();
  assert.deepEqual([s.bytes, s.hits, keys(c).length], [0, 1, 0]);
});
