'use strict';
// The five password modes (CONTRACT.md §11) against published vectors and values the other
// runtimes' libraries wrote (Python's bcrypt and argon2-cffi; Rust's bcrypt and argon2 crates
// write the same strings and are checked live by the conformance suite's cross-runtime rows).

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Hasher } = require('../src/passwords');
const { Guards } = require('../src/guard');
const { defaultLimits } = require('../src/config');

const guards = new Guards(defaultLimits());
const hasher = (mode, pepper = '') => new Hasher(mode, 4, pepper, guards);

test('bcrypt: the OpenBSD vector and a Python-made $2b$ string verify', async () => {
  const h = hasher('bcrypt');
  assert.equal(await h.verify('U*U', '$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW'), true);
  assert.equal(await h.verify('U*V', '$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW'), false);
  const python = '$2b$04$mGaDY4b8qwMSg55woJ60FermpIhx0G89lsHb4zYBblZ.0OB8vlOSa';
  assert.equal(await h.verify('correct horse battery', python), true);
  assert.equal(await h.verify('correct horse batterx', python), false);
});

test('bcrypt: the stored form is $2b$ with the configured cost, salted, and verifies', async () => {
  const h = hasher('bcrypt');
  const a = await h.hash('password123');
  const b = await h.hash('password123');
  assert.match(a, /^\$2b\$04\$[./A-Za-z0-9]{53}$/);
  assert.notEqual(a, b);
  assert.equal(await h.verify('password123', a), true);
  assert.equal(await h.verify('password124', a), false);
});

test('bcrypt-pepper: bcrypt of hex(HMAC-SHA-256(pepper, password)), as Python writes it', async () => {
  const h = hasher('bcrypt-pepper', 'pepper-1');
  const python = '$2b$04$Oce.xtAfpxR3yPpIKALtouMWEJn88rr6jpkylwhNCGw9GjPelr9pS';
  assert.equal(await h.verify('correct horse battery', python), true);
  assert.equal(await hasher('bcrypt-pepper', 'pepper-2').verify('correct horse battery', python), false);
  // Without the pepper it is plain bcrypt of the HMAC hex.
  const hex = crypto.createHmac('sha256', 'pepper-1').update('correct horse battery').digest('hex');
  assert.equal(await hasher('bcrypt').verify(hex, python), true);
  await assert.rejects(hasher('bcrypt-pepper', '').hash('password123'), (e) => e.status === 500);
});

test('argon2id: the reference implementation vector and a Python-made string verify', async () => {
  const h = hasher('argon2id');
  const reference = '$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc';
  assert.equal(await h.verify('password', reference), true);
  assert.equal(await h.verify('passwore', reference), false);
  const python = '$argon2id$v=19$m=19456,t=2,p=1$sEAKchHekBk3cWpmtdVy5w$ajdkqNWVfCWgGse8EbUMi38CGSXtGrJDZDM8rx1bakE';
  assert.equal(await h.verify('correct horse battery', python), true);
});

test('argon2id: the stored form has the RustCrypto defaults and a 16-byte salt', async () => {
  const s = await hasher('argon2id').hash('password123');
  const m = /^\$argon2id\$v=19\$m=19456,t=2,p=1\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})$/.exec(s);
  assert.ok(m, s);
  assert.equal(await hasher('argon2id').verify('password123', s), true);
});

test('plaintext and sha256 are what they say; a value of another mode is false, never an error', async () => {
  assert.equal(await hasher('plaintext').hash('password123'), 'password123');
  assert.equal(await hasher('sha256').hash('password123'), 'ef92b778bafe771e89245b89ecbc08a44a4e166c06659911881f383d4473e94f');
  const argon = await hasher('argon2id').hash('password123');
  for (const [mode, stored] of [['bcrypt', argon], ['argon2id', 'ef92b778bafe771e89245b89ecbc08a44a4e166c06659911881f383d4473e94f'],
    ['bcrypt', ''], ['argon2id', '$argon2id$v=19$m=19456,t=2,p=1$junk'], ['bcrypt', 'x'.repeat(1000)], ['sha256', argon]]) {
    assert.equal(await hasher(mode).verify('password123', stored), false, `${mode} on ${stored.slice(0, 20)}`);
  }
});

test('the hashing gate refuses with 503 busy once the wait runs out', async () => {
  const g = new Guards({ ...defaultLimits(), maxConcurrentHashes: 1, hashWaitMs: 50 });
  let release;
  const first = g.hash(() => new Promise((r) => { release = r; }));
  await assert.rejects(g.hash(async () => 1), (e) => e.status === 503 && e.code === 'busy' && e.headers['Retry-After'] === '1');
  release();
  await first;
  assert.equal(await g.hash(async () => 2), 2);
  assert.equal(g.snapshot().hashing.refused, 1);
});
