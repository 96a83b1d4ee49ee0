'use strict';
// JSON request bodies, read within the limit and parsed strictly (CONTRACT.md §4): the media
// type must be application/json (checked before reading), a body over max_body_bytes is a 413
// (the rest is read and dropped, up to DRAIN_BYTES / DRAIN_MS, so a streaming proxy sees the
// answer rather than a reset), the body must be UTF-8 JSON holding one object, and unknown,
// missing and duplicate fields and wrong types are named in `field`. JSON.parse keeps the last
// of duplicate keys silently, so a scan of the text (already known to be valid) finds them.

const { ApiError } = require('./errors');

const DRAIN_BYTES = 16 << 20;
const DRAIN_MS = 10000;

const STR = 'a string';
const U32 = 'a non-negative whole number below 2^32';
const OBJECT = 'an object';

function isJson(req) {
  const media = (req.headers['content-type'] || '').split(';', 1)[0].trim().toLowerCase();
  return media === 'application/json';
}

// The raw body, at most maxBytes; rejects with the 413 after draining what follows.
function readRaw(req, maxBytes) {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const chunks = [];
    let size = 0;
    let over = false;
    let timer = null;
    const tooLarge = () => {
      req.removeAllListeners('data');
      req.removeAllListeners('end');
      if (timer) clearTimeout(timer);
      const e = ApiError.tooLarge(maxBytes);
      e.close = true;
      reject(e);
    };
    if (Number.isFinite(declared) && declared > DRAIN_BYTES) {
      tooLarge();
      return;
    }
    req.on('data', (chunk) => {
      size += chunk.length;
      if (over) {
        if (size > DRAIN_BYTES) tooLarge();
        return;
      }
      if (size > maxBytes) {
        over = true;
        chunks.length = 0;
        timer = setTimeout(tooLarge, DRAIN_MS);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (timer) clearTimeout(timer);
      if (over) reject(ApiError.tooLarge(maxBytes));
      else resolve(Buffer.concat(chunks));
    });
    req.on('error', (e) => reject(ApiError.badRequest(`the body could not be read (${e.message}); send it again`)));
  });
}

const decoder = new TextDecoder('utf-8', { fatal: true });
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

// Scans valid JSON text for the first duplicate key of the top-level object, and notes which
// top-level values are written as integers (JSON.parse turns `1.0` and `1e3` into integers).
function scan(text) {
  let i = 0;
  let depth = 0;
  const stack = [];
  let duplicate = null;
  const integers = new Set();
  let pendingKey = null; // a top-level key whose value comes next
  const n = text.length;
  const readString = () => {
    let j = i + 1;
    while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
    const s = JSON.parse(text.slice(i, j + 1));
    i = j + 1;
    return s;
  };
  while (i < n) {
    const c = text[i];
    if (c === '{' || c === '[') {
      stack.push(c === '{' ? { keys: new Set(), expectKey: true } : null);
      depth++;
      pendingKey = null;
      i++;
    } else if (c === '}' || c === ']') {
      stack.pop();
      depth--;
      i++;
    } else if (c === '"') {
      const top = stack[stack.length - 1];
      const start = i;
      const s = readString();
      let k = i;
      while (k < n && /\s/.test(text[k])) k++;
      if (top && text[k] === ':') {
        if (top.keys.has(s) && depth === 1 && duplicate === null) duplicate = s;
        top.keys.add(s);
        if (depth === 1) pendingKey = s;
        i = k + 1;
      } else {
        pendingKey = null;
        void start;
      }
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      let j = i;
      while (j < n && /[-+0-9.eE]/.test(text[j])) j++;
      if (depth === 1 && pendingKey !== null && /^-?[0-9]+$/.test(text.slice(i, j))) integers.add(pendingKey);
      pendingKey = null;
      i = j;
    } else {
      if (c !== ' ' && c !== '\t' && c !== '\n' && c !== '\r' && c !== ',' && c !== ':') pendingKey = null;
      i++;
    }
  }
  return { duplicate, integers };
}

// The parsed body: 415, 413 or 400 as the contract says.
async function readJson(req, maxBytes) {
  if (!isJson(req)) throw ApiError.unsupportedMediaType();
  const raw = await readRaw(req, maxBytes);
  let text;
  try {
    text = decoder.decode(raw);
  } catch {
    throw ApiError.badRequest('the body is not valid UTF-8; send UTF-8 JSON');
  }
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw ApiError.badRequest(`the body is not the JSON this takes: ${e.message}`);
  }
  const seen = [value];
  while (seen.length) {
    const v = seen.pop();
    if (typeof v === 'string') {
      if (LONE_SURROGATE.test(v)) throw ApiError.badRequest('the body is not the JSON this takes: a string holds a lone surrogate escape');
    } else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) { seen.push(k); seen.push(x); }
    }
  }
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const { duplicate, integers } = scan(text);
    Object.defineProperty(value, '__scan', { value: { duplicate, integers }, enumerable: false });
  }
  return value;
}

function kindOf(v) {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return 'a boolean';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a floating point number';
  if (typeof v === 'string') return 'a string';
  if (Array.isArray(v)) return 'an array';
  return 'an object';
}

function isKind(kind, v, name, integers) {
  if (kind === STR) return typeof v === 'string';
  if (kind === U32) return Number.isInteger(v) && v >= 0 && v < 2 ** 32 && integers.has(name);
  if (kind === OBJECT) return v !== null && typeof v === 'object' && !Array.isArray(v);
  throw new Error(kind);
}

// Checks an object against {name: [kind, required]}; returns the given fields (null dropped).
// `strict` refuses unknown fields.
function fields(value, spec, what, strict = true) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw ApiError.badRequest(`the body is not the JSON this takes: expected ${what} as a JSON object`);
  }
  const { duplicate, integers } = value.__scan || { duplicate: null, integers: new Set() };
  if (duplicate !== null && (strict || duplicate in spec)) {
    throw ApiError.invalid(duplicate, `duplicate field \`${duplicate}\`; fix the body and send it again`);
  }
  if (strict) {
    for (const k of Object.keys(value)) {
      if (!Object.prototype.hasOwnProperty.call(spec, k)) {
        const names = Object.keys(spec).map((n) => `\`${n}\``).join(', ');
        throw ApiError.invalid(k, `unknown field \`${k}\`, expected one of ${names}; fix the body and send it again`);
      }
    }
  }
  const out = {};
  for (const [name, [kind, required]] of Object.entries(spec)) {
    const v = Object.prototype.hasOwnProperty.call(value, name) ? value[name] : null;
    if (v === null) {
      if (required) throw ApiError.invalid(name, `missing field \`${name}\`; fix the body and send it again`);
      continue;
    }
    if (!isKind(kind, v, name, integers)) {
      const got = kind === U32 && Number.isInteger(v) && integers.has(name) ? 'an integer out of range' : kindOf(v);
      throw ApiError.badRequest(`the body is not the JSON this takes: \`${name}\` must be ${kind}, not ${got}`, name);
    }
    out[name] = v;
  }
  return out;
}

module.exports = { readJson, fields, isJson, STR, U32, OBJECT };
