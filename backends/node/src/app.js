'use strict';
// The Express application (CONTRACT.md §4, §5): a Router per resource, the session every data
// request needs, the timing headers every response carries, and one error-handling middleware
// that renders every error as the API's JSON body. Routing follows the contract where
// Express's defaults differ: leading and trailing slashes are trimmed (a doubled one inside is
// not), which wrong methods are a 405 and which a 404, and that /api/* and POST /graphql resolve
// the session before their route is known.

const crypto = require('node:crypto');
const express = require('express');
const { ApiError } = require('./errors');
const { Trace } = require('./service');
const { sendJson, parseQuery } = require('./http');

const ROUTED_METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);

const segments = (path) => path.replace(/^\/+|\/+$/g, '').split('/');

// The paths where a wrong method is a 405 (elsewhere 404).
function methodNotAllowedHere(path) {
  const s = segments(path);
  const j = s.join('/');
  return j === 'api/users' || j === 'api/cache' || j === 'graphql' || (s.length === 3 && s[0] === 'api' && s[1] === 'users');
}

function sessionCode(req) {
  const code = req.headers['x-stacklab-session'];
  if (code === undefined || Array.isArray(code) || !/^[\t\x20-\x7e]*$/.test(code)) throw ApiError.sessionMissing();
  if (!/^[A-Za-z0-9]{16,64}$/.test(code)) throw ApiError.sessionExpired();
  return code;
}

const ms = (x) => x.toFixed(3);

function createApp(rt) {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', parseQuery);

  // Timing and the cache outcome, written just before the headers go out, on every response.
  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    const trace = new Trace();
    res.locals.trace = trace;
    const writeHead = res.writeHead;
    res.writeHead = function writeHeadWithTiming(...args) {
      if (!res.headersSent) {
        const backend = Number(process.hrtime.bigint() - started) / 1e6;
        res.setHeader('Server-Timing', `backend;dur=${ms(backend)}, cache;dur=${ms(trace.cacheMs)}, db;dur=${ms(trace.dbMs)}`);
        if (trace.outcome !== null) res.setHeader('x-stacklab-cache', trace.outcome);
        if (rt.stopping) res.setHeader('Connection', 'close');
      }
      return writeHead.apply(this, args);
    };
    // The contract's path: leading and trailing slashes trimmed.
    const q = req.url.indexOf('?');
    const path = q < 0 ? req.url : req.url.slice(0, q);
    req.url = `/${path.replace(/^\/+|\/+$/g, '')}${q < 0 ? '' : req.url.slice(q)}`;
    next();
  });

  // Only /api, /graphql, /healthz and /internal exist; /api/* and /graphql need a session.
  app.use(async (req, res, next) => {
    try {
      const first = segments(req.path)[0];
      if (!['api', 'graphql', 'healthz', 'internal'].includes(first)) throw ApiError.noRoute(req.path);
      const dataPath = first === 'api' || first === 'graphql';
      if (dataPath) res.locals.session = await rt.sessions.get(sessionCode(req));
      if (!ROUTED_METHODS.has(req.method)) {
        throw dataPath && methodNotAllowedHere(req.path) ? ApiError.methodNotAllowed() : ApiError.noRoute(req.path);
      }
      next();
    } catch (e) {
      next(e);
    }
  });

  app.use('/healthz', require('./api/health')(rt));
  app.use('/internal', require('./api/internal')(rt));
  app.use('/api/users', require('./api/users')(rt));
  app.use('/api/cache', require('./api/cache')(rt));
  app.use('/api/analysis', require('./api/analysis')(rt));
  app.use('/graphql', require('./api/graphql')(rt));

  app.use((req, res, next) => {
    next(methodNotAllowedHere(req.path) && segments(req.path)[0] !== 'healthz' ? ApiError.methodNotAllowed() : ApiError.noRoute(req.path));
  });

  // The one error-handling middleware: every error is the JSON error body.
  // eslint-disable-next-line no-unused-vars
  app.use((err, req, res, next) => {
    let e = err;
    if (!(e instanceof ApiError)) {
      if (err && err.status && err.status < 500) {
        e = ApiError.badRequest(`the request could not be read (${err.message}); send it again`);
      } else {
        console.error(`request ${req.headers['x-request-id'] || '-'} failed: ${req.method} ${req.path}`, err);
        e = ApiError.internal(String(err && err.message));
      }
    }
    if (e.status >= 500 && e.code !== 'busy') {
      // The proxy's request id ties this line to the inspector's capture.
      console.error(`request ${req.headers['x-request-id'] || '-'} failed: ${e.code} ${e.detail || e.message}`);
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
    if (err.close) res.setHeader('Connection', 'close');
    sendJson(res, e.status, e.body());
  });
  return app;
}

// What every request of this instance shares.
class Runtime {
  #credential;

  constructor(config, sessions, guards, credential) {
    this.config = config;
    this.sessions = sessions;
    this.guards = guards;
    this.#credential = Buffer.from(credential);
    this.stopping = false;
  }

  // Constant time; an empty credential matches nothing.
  credentialMatches(presented) {
    const p = Buffer.from(presented);
    const c = this.#credential;
    if (c.length === 0) return false;
    const same = p.length === c.length ? crypto.timingSafeEqual(p, c) : (crypto.timingSafeEqual(c, c), false);
    return same;
  }
}

module.exports = { createApp, Runtime };
