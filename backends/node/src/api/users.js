'use strict';
// /api/users: every call goes to the users service (service.js).

const express = require('express');
const body = require('../body');
const { ApiError } = require('../errors');
const { sendJson, whole, handle } = require('../http');

const CREATE = { username: [body.STR, true], email: [body.STR, true], password: [body.STR, true], full_name: [body.STR, false] };
const UPDATE = { username: [body.STR, false], email: [body.STR, false], password: [body.STR, false], full_name: [body.STR, false] };
const VERIFY = { password: [body.STR, true] };

function userId(segment) {
  const message = 'a user id is a positive whole number';
  const id = whole(segment, 'id', message);
  if (id <= 0) throw ApiError.invalid('id', message);
  return id;
}

function intParam(req, name) {
  const v = req.query[name];
  return v === undefined ? null : whole(v, name, `${name} must be a whole number`);
}

module.exports = function usersRouter(rt) {
  const r = express.Router();
  const read = async (req, spec, what) => body.fields(await body.readJson(req, rt.config.limits.maxBodyBytes), spec, what);

  r.post('/', handle(async (req, res) => {
    const b = await read(req, CREATE, 'a new user');
    sendJson(res, 201, await res.locals.session.create(b.username, b.email, b.password, b.full_name, res.locals.trace));
  }));
  r.get('/', handle(async (req, res) => {
    const page = await res.locals.session.list(req.query.q, intParam(req, 'limit'), intParam(req, 'offset'), res.locals.trace);
    sendJson(res, 200, page);
  }));
  r.get('/:segment', handle(async (req, res) => {
    sendJson(res, 200, await res.locals.session.get(userId(req.params.segment), res.locals.trace));
  }));
  r.patch('/:segment', handle(async (req, res) => {
    const id = userId(req.params.segment);
    sendJson(res, 200, await res.locals.session.update(id, await read(req, UPDATE, 'the changes'), res.locals.trace));
  }));
  r.delete('/:segment', handle(async (req, res) => {
    await res.locals.session.delete(userId(req.params.segment), res.locals.trace);
    sendJson(res, 200, { deleted: true });
  }));
  r.post('/:segment/verify-password', handle(async (req, res) => {
    const id = userId(req.params.segment);
    const b = await read(req, VERIFY, 'a password');
    sendJson(res, 200, { ok: await res.locals.session.verifyPassword(id, b.password, res.locals.trace) });
  }));
  return r;
};
