'use strict';
// Small HTTP helpers shared by the app and the routers: the JSON answer, the query string as
// the contract reads it (first pair wins, `+` a space, %XX a byte, lossy UTF-8), and decimal
// integers as Rust's str::parse reads them.

const { ApiError } = require('./errors');

function sendJson(res, status, value) {
  const body = Buffer.from(JSON.stringify(value));
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', body.length);
  res.end(body);
}

function decodeComponent(s) {
  const bytes = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '+') bytes.push(0x20);
    else if (c === '%' && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      const cp = s.codePointAt(i);
      if (cp > 0xffff) i++;
      for (const b of Buffer.from(String.fromCodePoint(cp))) bytes.push(b);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function parseQuery(text) {
  const out = Object.create(null);
  if (!text) return out;
  for (const pair of text.split('&')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    const name = decodeComponent(eq < 0 ? pair : pair.slice(0, eq));
    if (!(name in out)) out[name] = decodeComponent(eq < 0 ? '' : pair.slice(eq + 1));
  }
  return out;
}

const I64_MAX = 2n ** 63n - 1n;

// A decimal i64 (optional sign, ASCII digits only), as a Number; else 400 invalid on `field`.
function whole(text, field, message) {
  if (!/^[+-]?[0-9]+$/.test(text)) throw ApiError.invalid(field, message);
  const big = BigInt(text);
  if (big > I64_MAX || big < -I64_MAX - 1n) throw ApiError.invalid(field, message);
  return Number(big);
}

// Wraps an async handler so a rejection reaches the error-handling middleware.
const handle = (fn) => (req, res, next) => Promise.resolve(fn(req, res, next)).catch(next);

module.exports = { sendJson, parseQuery, decodeComponent, whole, handle };
