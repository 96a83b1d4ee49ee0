'use strict';
// /api/cache: what the session's cache holds, its policy (switchable where the engine allows),
// a flush of the session's own entries.

const express = require('express');
const body = require('../body');
const { CacheError, fromCacheError } = require('../errors');
const { MAX_LISTED_ITEMS } = require('../cache');
const { sendJson, handle } = require('../http');

async function cacheStep(fn) {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CacheError) throw fromCacheError(e);
    throw e;
  }
}

async function view(c) {
  return cacheStep(async () => {
    const items = await c.items(MAX_LISTED_ITEMS);
    const stats = await c.stats();
    const p = await c.policy();
    return { engine: c.engine, policy: p.policy, policies: p.policies, changeable: p.changeable, note: p.note, items, stats };
  });
}

module.exports = function cacheRouter(rt) {
  const r = express.Router();
  r.get('/', handle(async (req, res) => sendJson(res, 200, await view(res.locals.session.cache))));
  r.put('/policy', handle(async (req, res) => {
    const b = body.fields(await body.readJson(req, rt.config.limits.maxBodyBytes), { policy: [body.STR, true] }, 'a policy');
    // One canonical name everywhere: " ALLKEYS-LFU " is applied, shown and reported as "allkeys-lfu".
    const policy = b.policy.trim().toLowerCase();
    const s = res.locals.session;
    await cacheStep(() => s.cache.setPolicy(policy));
    await rt.sessions.cachePolicyChanged(s.code, policy);
    sendJson(res, 200, await view(s.cache));
  }));
  r.delete('/', handle(async (req, res) => {
    const c = res.locals.session.cache;
    await cacheStep(() => c.flush());
    sendJson(res, 200, await view(c));
  }));
  return r;
};
