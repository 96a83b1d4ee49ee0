'use strict';
// GET /healthz: liveness for control's and the proxy's checks, with the §9a counters.

const express = require('express');
const { sendJson } = require('../http');

module.exports = function healthRouter(rt) {
  const r = express.Router();
  r.get('/', (req, res) => sendJson(res, 200, { status: 'ok', limits: rt.guards.snapshot() }));
  return r;
};
