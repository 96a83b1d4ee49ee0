'use strict';
// The launch contract (CONTRACT.md §1, §2) and what is the Node runtime's own around it: the
// credential on stdin, the first stdout line, config errors naming their key before any port
// is bound, graceful stops, and one session end to end on SQLite. The conformance suite runs
// the whole contract against this runtime too.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startControl, startInstance, descriptor, newCode, request } = require('./helpers');

test('the first line is the address; stdin EOF stops it with exit 0', async () => {
  const inst = await startInstance();
  assert.ok(inst.port > 0);
  const health = await request(inst.port, 'GET', '/healthz');
  assert.equal(health.status, 200);
  assert.equal(health.body.status, 'ok');
  assert.match(health.headers['server-timing'], /^backend;dur=\d+\.\d{3}, cache;dur=0\.000, db;dur=0\.000$/);
  assert.equal(health.headers['x-stacklab-cache'], undefined);
  assert.deepEqual((await inst.stop()), { code: 0, signal: null });
});

test('SIGTERM stops it with exit 0', async () => {
  const inst = await startInstance();
  inst.child.kill('SIGTERM');
  assert.deepEqual(await inst.exited, { code: 0, signal: null });
});

test('no credential on the first line is a refusal, never a start', async () => {
  const inst = await startInstance({ stdinLine: '\n' });
  assert.equal(inst.firstLine, null);
  assert.notEqual((await inst.exited).code, 0);
  assert.match(inst.stderr, /no token on the first line/);
});

test('a bad [backend] key is named, with every problem at once, before listening', async () => {
  const inst = await startInstance({ config: 'bcrypt_cost = 40\nmax_sesions = 3\nmax_body_bytes = "big"\n' });
  assert.equal(inst.firstLine, null);
  assert.notEqual((await inst.exited).code, 0);
  assert.match(inst.stderr, /backend: unknown field `max_sesions`/);
  assert.match(inst.stderr, /backend\.max_body_bytes: must be a non-negative whole number/);
});

test('the credential never shows in argv or the environment', async () => {
  const inst = await startInstance({ credential: 'very-secret-credential' });
  const fs = require('node:fs');
  const pid = inst.child.pid;
  // bin/stacklab-node execs node, so the pid is node's own.
  const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
  assert.ok(!cmdline.includes('very-secret-credential'));
  assert.ok(!environ.includes('very-secret-credential'));
  await inst.stop();
});

test('a session on SQLite: users, cache outcome, encryption, and the forget endpoint', async () => {
  const control = await startControl('cred-1');
  const inst = await startInstance({ controlUrl: control.url, credential: 'cred-1' });
  try {
    const code = newCode();
    control.stacks.set(code, descriptor(code, { encryption: 'aes-256-gcm', encryption_key: require('node:crypto').randomBytes(32).toString('base64') }));
    const created = await request(inst.port, 'POST', '/api/users', { code, body: { username: 'Ann', email: 'Ann@Example.com', password: 'password123' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.headers['x-stacklab-cache'], 'bypass');
    assert.match(created.body.stored_email, /^v1:/);
    assert.equal(created.body.email, 'Ann@Example.com');
    const id = created.body.id;
    assert.equal((await request(inst.port, 'GET', `/api/users/${id}`, { code })).headers['x-stacklab-cache'], 'miss');
    assert.equal((await request(inst.port, 'GET', `//api/users/${id}/`, { code })).headers['x-stacklab-cache'], 'hit');
    const found = await request(inst.port, 'GET', '/api/users?q=ANN%40example.com', { code });
    assert.equal(found.body.total, 1);
    const dup = await request(inst.port, 'POST', '/api/users', { code, body: { username: 'bob', email: 'ann@example.COM', password: 'password123' } });
    assert.deepEqual([dup.status, dup.body.error.code, dup.body.error.field], [409, 'conflict', 'email']);
    const gql = await request(inst.port, 'POST', '/graphql', { code, body: { query: `{ user(id: ${id}) { username createdAt } }` } });
    assert.equal(gql.body.data.user.createdAt, created.body.created_at); // beyond 32 bits
    // Forget: the credential is required; then the descriptor is fetched again.
    assert.equal((await request(inst.port, 'DELETE', `/internal/sessions/${code}`)).status, 401);
    assert.equal((await request(inst.port, 'DELETE', `/internal/sessions/${code}`, { headers: { authorization: 'Bearer nope' } })).status, 403);
    const forgot = await request(inst.port, 'DELETE', `/internal/sessions/${code}`, { headers: { authorization: 'Bearer cred-1' } });
    assert.deepEqual(forgot.body, { closed: code });
    control.stacks.delete(code);
    const gone = await request(inst.port, 'GET', `/api/users/${id}`, { code });
    assert.deepEqual([gone.status, gone.body.error.code], [410, 'session_expired']);
  } finally {
    await inst.stop();
    await control.close();
  }
});

test('bodies: 415 before reading, 413 past the limit, duplicates and wrong types named', async () => {
  const control = await startControl('cred-2');
  const inst = await startInstance({ controlUrl: control.url, credential: 'cred-2', config: 'bcrypt_cost = 4\nmax_body_bytes = 1024\n' });
  try {
    const code = newCode();
    control.stacks.set(code, descriptor(code));
    const post = (body, headers) => request(inst.port, 'POST', '/api/users', { code, body, headers });
    assert.equal((await post('{}', { 'content-type': 'text/plain' })).status, 415);
    const big = await post(JSON.stringify({ username: 'x'.repeat(2000) }));
    assert.deepEqual([big.status, big.body.error.code], [413, 'body_too_large']);
    const dupe = await post('{"username":"ann","username":"bob","email":"a@b.co","password":"password123"}');
    assert.deepEqual([dupe.status, dupe.body.error.code, dupe.body.error.field], [400, 'invalid', 'username']);
    const wrong = await post({ username: 5, email: 'a@b.co', password: 'password123' });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.error.field, 'username');
    const bench = await request(inst.port, 'POST', '/api/analysis/benchmark', { code, body: '{"reads":1.5}' });
    assert.deepEqual([bench.status, bench.body.error.field], [400, 'reads']);
    const surrogate = await post('{"username":"\\ud800","email":"a@b.co","password":"password123"}');
    assert.deepEqual([surrogate.status, surrogate.body.error.code], [400, 'bad_request']);
  } finally {
    await inst.stop();
    await control.close();
  }
});
