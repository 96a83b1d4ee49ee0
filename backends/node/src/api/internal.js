'use strict';
// DELETE /internal/sessions/:code: control tells the instance to forget a session (its
// descriptor and connections), with the runtime credential as a bearer token.

const express = require('express');
const { ApiError } = require('../errors');
const { sendJson, handle } = require('../http');

module.exports = function internalRouter(rt) {
  const r = express.Router();
  r.delete('/sessions/:code', handle(async (req, res) => {
    const auth = req.headers.authorization || '';
    if (!auth.startsWith('Bearer ') || auth.length === 'Bearer '.length) throw ApiError.unauthorized();
    if (!rt.credentialMatches(auth.slice('Bearer '.length))) throw ApiError.forbidden();
    await rt.sessions.close(req.params.code);
    sendJson(res, 200, { closed: req.params.code });
  }));
  return r;
};
