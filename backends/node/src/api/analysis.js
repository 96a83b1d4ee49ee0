'use strict';
// /api/analysis: size, rows and the cache's hit ratio; the on-demand benchmark.

const express = require('express');
const body = require('../body');
const analysis = require('../analysis');
const { sendJson, handle } = require('../http');

module.exports = function analysisRouter(rt) {
  const r = express.Router();
  r.get('/', handle(async (req, res) => sendJson(res, 200, await analysis.overview(res.locals.session))));
  r.post('/benchmark', handle(async (req, res) => {
    const limits = rt.config.limits;
    const b = body.fields(await body.readJson(req, limits.maxBodyBytes), { reads: [body.U32, false], writes: [body.U32, false] }, 'a benchmark');
    const out = await analysis.benchmark(res.locals.session, limits, rt.guards, b.reads ?? 200, b.writes ?? 200);
    sendJson(res, 200, out);
  }));
  return r;
};
