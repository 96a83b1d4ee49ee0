'use strict';
// /graphql: queries and mutations on POST, over the same service as REST (another method is a
// 405; no GraphiQL page: it loaded its scripts from a public CDN, and the console runs GraphQL).

const express = require('express');
const body = require('../body');
const gql = require('../gql');
const { ApiError } = require('../errors');
const { sendJson, handle } = require('../http');

const REQUEST = { query: [body.STR, false], operationName: [body.STR, false], variables: [body.OBJECT, false], extensions: [body.OBJECT, false] };

module.exports = function graphqlRouter(rt) {
  const r = express.Router();
  r.post('/', handle(async (req, res) => {
    const limits = rt.config.limits;
    // Unknown fields are ignored, as async-graphql's request type does.
    const b = body.fields(await body.readJson(req, limits.maxBodyBytes), REQUEST, 'a GraphQL request', false);
    const out = await gql.run(limits, rt.guards, b.query ?? '', b.operationName, b.variables,
      { session: res.locals.session, trace: res.locals.trace });
    if (!out.refused) {
      sendJson(res, 200, out.response);
      return;
    }
    const { errors } = out.response;
    const more = errors.length === 1 ? '' : ` (and ${errors.length - 1} more)`;
    const e = ApiError.invalid('query', `the GraphQL request was refused before it ran: ${errors[0].message}${more}; fix the query and send it again`);
    sendJson(res, 400, { ...out.response, ...e.body() });
  }));
  return r;
};
