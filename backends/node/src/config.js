'use strict';
// The instance's arguments and the `[backend]` section of the config file (CONTRACT.md §1,
// §2), validated in one step that reports every problem with its key, before any port is
// bound; and the input rules the limits set (§6), each limit named here.

const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const { readTable, TomlError } = require('./toml');
const { ApiError } = require('./errors');

const INT_KEYS = [
  'max_sessions', 'session_idle_ms', 'db_connections_per_session', 'descriptor_ttl_ms',
  'bcrypt_cost', 'max_body_bytes', 'graphql_max_depth', 'graphql_max_complexity',
  'graphql_max_fields', 'graphql_max_hashes', 'max_concurrent_hashes', 'hash_wait_ms',
  'max_concurrent_benchmarks',
];
const STR_KEYS = ['addr', 'control_url'];

class ConfigError extends Error {
  constructor(problems) {
    super(problems.map(([k, m]) => `${k}: ${m}`).join('; '));
    this.problems = problems;
  }
}

// The defaults, each a named value (the Rust runtime's).
function defaultLimits() {
  return {
    minUsername: 3,
    maxUsername: 32,
    maxEmail: 254,
    minPassword: 8,
    // bcrypt reads 72 bytes at most; longer passwords are refused rather than cut silently.
    maxPassword: 72,
    maxFullName: 100,
    maxPage: 100,
    maxBodyBytes: 64 * 1024,
    bcryptCost: 10,
    maxBenchmarkOps: 2000,
    graphqlMaxDepth: 6,
    graphqlMaxComplexity: 200,
    graphqlMaxFields: 500,
    graphqlMaxHashes: 10,
    maxConcurrentHashes: 2 * Math.max(1, os.cpus().length),
    hashWaitMs: 1000,
    maxConcurrentBenchmarks: 2,
  };
}

function parseAddr(text) {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const host = m[1] || m[2];
  const port = Number(m[3]);
  if (port > 65535 || net.isIP(host) === 0) return null;
  return { host, port };
}

// Reads `path`'s [backend] section (or the defaults without a file).
function load(path) {
  let section = {};
  if (path) {
    let text;
    try {
      text = fs.readFileSync(path, 'utf8');
    } catch (e) {
      throw new ConfigError([['config', `cannot read ${path}: ${e.code || e.message}`]]);
    }
    try {
      section = readTable(text, 'backend');
    } catch (e) {
      if (e instanceof TomlError) throw new ConfigError([['config', `${path} is not valid TOML: ${e.message}`]]);
      throw e;
    }
  }
  return fromSection(section);
}

function fromSection(section) {
  const problems = [];
  for (const [key, value] of Object.entries(section)) {
    if (INT_KEYS.includes(key)) {
      if (!Number.isInteger(value) || value < 0) problems.push([`backend.${key}`, 'must be a non-negative whole number']);
    } else if (STR_KEYS.includes(key)) {
      if (typeof value !== 'string') problems.push([`backend.${key}`, 'must be a string']);
    } else {
      problems.push(['backend', `unknown field \`${key}\``]);
    }
  }
  if (problems.length) throw new ConfigError(problems);
  const get = (k, d) => (section[k] === undefined ? d : section[k]);
  const addrText = get('addr', '127.0.0.1:0');
  const addr = parseAddr(addrText);
  if (!addr) problems.push(['backend.addr', `\`${addrText}\` is not \`host:port\``]);
  const controlUrl = get('control_url', 'http://127.0.0.1:9000');
  if (!controlUrl.startsWith('http://')) problems.push(['backend.control_url', "must be an http:// URL of control's admin address"]);
  const d = defaultLimits();
  const bcryptCost = get('bcrypt_cost', d.bcryptCost);
  if (bcryptCost < 4 || bcryptCost > 16) problems.push(['backend.bcrypt_cost', 'must be between 4 and 16']);
  const positive = (key, dflt) => {
    const v = get(key, dflt);
    if (v === 0) { problems.push([`backend.${key}`, 'must be at least 1']); return dflt; }
    return v;
  };
  const limits = {
    ...d,
    bcryptCost,
    maxBodyBytes: get('max_body_bytes', d.maxBodyBytes),
    graphqlMaxDepth: positive('graphql_max_depth', d.graphqlMaxDepth),
    graphqlMaxComplexity: positive('graphql_max_complexity', d.graphqlMaxComplexity),
    graphqlMaxFields: positive('graphql_max_fields', d.graphqlMaxFields),
    graphqlMaxHashes: positive('graphql_max_hashes', d.graphqlMaxHashes),
    maxConcurrentHashes: positive('max_concurrent_hashes', d.maxConcurrentHashes),
    hashWaitMs: get('hash_wait_ms', d.hashWaitMs),
    maxConcurrentBenchmarks: positive('max_concurrent_benchmarks', d.maxConcurrentBenchmarks),
  };
  if (problems.length) throw new ConfigError(problems);
  return {
    addr,
    controlUrl,
    limits,
    maxSessions: Math.max(1, get('max_sessions', 256)),
    sessionIdleMs: get('session_idle_ms', 300000),
    dbConnectionsPerSession: Math.max(1, get('db_connections_per_session', 4)),
    descriptorTtlMs: get('descriptor_ttl_ms', 30000),
  };
}

// --- input rules (CONTRACT.md §6) ----------------------------------------------------------

const CONTROL = /\p{Cc}/u;
const SPACE = /\s/u;
const DOMAIN_CHAR = /^[\p{L}\p{N}.-]$/u; // Rust's char::is_alphanumeric, `.` and `-`
const chars = (s) => [...s].length;

function username(limits, v) {
  v = v.trim();
  const n = chars(v);
  if (n < limits.minUsername || n > limits.maxUsername) {
    throw ApiError.invalid('username', `a username is ${limits.minUsername} to ${limits.maxUsername} characters`);
  }
  if (!/^[A-Za-z0-9_.-]+$/.test(v)) throw ApiError.invalid('username', 'use letters, digits, `_`, `.` or `-` in a username');
  return v;
}

function email(limits, v) {
  v = v.trim();
  if (!v || chars(v) > limits.maxEmail) throw ApiError.invalid('email', `an email address is 3 to ${limits.maxEmail} characters`);
  const bad = ApiError.invalid('email', 'give an email address like name@example.com');
  const at = v.lastIndexOf('@');
  if (at < 0) throw bad;
  const local = v.slice(0, at);
  const domain = v.slice(at + 1);
  const domainOk = domain.includes('.') && !domain.startsWith('.') && !domain.endsWith('.') &&
    [...domain].every((c) => DOMAIN_CHAR.test(c));
  if (!local || local.includes('@') || !domainOk || [...v].some((c) => SPACE.test(c) || CONTROL.test(c))) throw bad;
  return v;
}

function password(limits, v) {
  if (chars(v) < limits.minPassword || Buffer.byteLength(v) > limits.maxPassword) {
    throw ApiError.invalid('password', `a password is ${limits.minPassword} characters to ${limits.maxPassword} bytes`);
  }
  // PostgreSQL text cannot hold NUL and bcrypt stops reading at one: refused everywhere.
  if (v.includes('\0')) throw ApiError.invalid('password', 'a password cannot contain the NUL character');
}

function fullName(limits, v) {
  v = v.trim();
  if (chars(v) > limits.maxFullName || CONTROL.test(v)) {
    throw ApiError.invalid('full_name', `a full name is at most ${limits.maxFullName} characters, without control characters`);
  }
  return v;
}

module.exports = { load, fromSection, parseAddr, ConfigError, defaultLimits, rules: { username, email, password, fullName }, chars };
