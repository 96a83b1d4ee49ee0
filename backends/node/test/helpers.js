'use strict';
// Helpers of the Node runtime's own tests: engines from STACKLAB_TEST_* (a missing one skips
// its test, saying so, or fails it under STACKLAB_REQUIRE_SERVICES=1), a descriptor server
// standing in for control's /admin/stacks, and real instances of bin/stacklab-node on port 0.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const RUNTIME = path.resolve(__dirname, '..');
const START_DEADLINE_MS = 30000;

// The engine's address, or null having skipped the test (failed under CI).
function engine(t, variable) {
  const value = process.env[variable];
  if (value) return value;
  if (process.env.STACKLAB_REQUIRE_SERVICES === '1') assert.fail(`${variable} is not set, and STACKLAB_REQUIRE_SERVICES=1`);
  t.skip(`${variable} is not set`);
  return null;
}

const newCode = () => crypto.randomBytes(16).toString('hex');
const newKey = () => crypto.randomBytes(32).toString('base64');

// Control's /admin/stacks/{code} and /admin/stacks/{code}/cache-policy behind a bearer credential.
async function startControl(credential) {
  const control = { stacks: new Map(), policies: [], fetches: new Map() };
  const server = http.createServer((req, res) => {
    const send = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.headers.authorization !== `Bearer ${credential}`) { send(403, { error: { code: 'forbidden', message: 'no' } }); return; }
    const parts = req.url.replace(/^\/+|\/+$/g, '').split('/');
    let raw = '';
    req.on('data', (c) => { raw += c; });
    req.on('end', () => {
      if (req.method === 'GET' && parts.length === 3 && parts[0] === 'admin' && parts[1] === 'stacks') {
        control.fetches.set(parts[2], (control.fetches.get(parts[2]) || 0) + 1);
        const d = control.stacks.get(parts[2]);
        if (d) send(200, d);
        else send(404, { error: { code: 'session_expired', message: 'gone' } });
      } else if (req.method === 'PUT' && parts.length === 4 && parts[3] === 'cache-policy') {
        control.policies.push([parts[2], JSON.parse(raw).policy]);
        send(200, {});
      } else {
        send(404, { error: { code: 'not_found', message: req.url } });
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  control.url = `http://127.0.0.1:${server.address().port}`;
  control.close = () => new Promise((r) => server.close(r));
  return control;
}

// A descriptor; `over` replaces fields (cache fields go in over.cache).
function descriptor(code, over = {}) {
  const { cache, ...rest } = over;
  return {
    session: code, runtime: 'node', protocol: 'rest',
    database: { engine: 'sqlite', url: `sqlite://${path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'stacklab-node-')), 'db.sqlite')}?mode=rwc` },
    cache: { engine: 'memory', url: '', key_prefix: '', policy: '', max_bytes: 0, ttl_ms: 0, shared: false, ...cache },
    write_policy: 'cache-aside', password_storage: 'sha256', encryption: 'none', encryption_key: '', pepper: '',
    ...rest,
  };
}

// Starts bin/stacklab-node; resolves once it printed its address.
async function startInstance({ controlUrl, credential = 'test-credential', config = 'bcrypt_cost = 4\n', args = [], stdinLine } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stacklab-node-cfg-'));
  const file = path.join(dir, 'stacklab.toml');
  fs.writeFileSync(file, `[backend]\n${config}`);
  const child = spawn(path.join(RUNTIME, 'bin', 'stacklab-node'),
    ['--addr', '127.0.0.1:0', '--control-url', controlUrl || 'http://127.0.0.1:9', '--token-stdin', '--config', file, ...args],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  const inst = { child, stderr: '', stdout: '' };
  child.stderr.on('data', (d) => { inst.stderr += d; });
  inst.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  child.stdin.write(stdinLine === undefined ? `${credential}\n` : stdinLine);
  const first = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no address within ${START_DEADLINE_MS} ms: ${inst.stderr}`)), START_DEADLINE_MS);
    child.stdout.on('data', (d) => {
      inst.stdout += d;
      const nl = inst.stdout.indexOf('\n');
      if (nl >= 0) { clearTimeout(timer); resolve(inst.stdout.slice(0, nl)); }
    });
    inst.exited.then(() => { clearTimeout(timer); resolve(null); });
  });
  inst.firstLine = first;
  if (first) {
    const m = /^stacklab backend on http:\/\/127\.0\.0\.1:(\d+)$/.exec(first);
    assert.ok(m, `first line: ${first}`);
    inst.port = Number(m[1]);
  }
  inst.stop = async () => {
    if (child.exitCode === null) child.stdin.end();
    return inst.exited;
  };
  return inst;
}

// One HTTP request to an instance: {status, headers, body (parsed JSON when it is)}.
function request(port, method, urlPath, { code, body, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (code) h['x-stacklab-session'] = code;
    let data = null;
    if (body !== undefined) {
      data = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      if (!h['content-type']) h['content-type'] = 'application/json';
      h['content-length'] = data.length;
    }
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers: h, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed = text;
        try { parsed = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, body: parsed });
      });
    });
    req.on('error', reject);
    req.end(data || undefined);
  });
}

module.exports = { engine, newCode, newKey, startControl, startInstance, descriptor, request, RUNTIME };
