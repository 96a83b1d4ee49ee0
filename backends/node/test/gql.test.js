'use strict';
// The GraphQL limits' numbers (CONTRACT.md §7, §9a): the contract's own examples, a fragment
// bomb counted in one pass, and the hashing fields.

const test = require('node:test');
const assert = require('node:assert/strict');
const { parse } = require('graphql');
const { countFields, countSpreadFields, countHashes, complexityAndDepth } = require('../src/gql');

test("complexity and depth: the contract's examples", () => {
  assert.deepEqual(complexityAndDepth(parse('{ users { total } }')), [10, 2]);
  assert.deepEqual(complexityAndDepth(parse('{ users { items { id username } } }')), [30, 3]);
  assert.deepEqual(complexityAndDepth(parse('{ user(id: 1) { id __typename } }')), [2, 2]);
  assert.deepEqual(complexityAndDepth(parse('query { ...F } fragment F on Query { user(id: 1) { id } }')), [2, 2]);
});

test('fields: written out, and spread out in one pass even for a fragment bomb', () => {
  assert.equal(countFields(parse('{ a: user(id: 1) { id } b: user(id: 2) { id __typename } }')), 5);
  const defs = ['fragment F0 on User { id username }'];
  for (let i = 1; i <= 48; i++) defs.push(`fragment F${i} on User { ...F${i - 1} ...F${i - 1} }`);
  const doc = parse(`{ user(id: 1) { ...F48 } } ${defs.join(' ')}`);
  const started = Date.now();
  assert.equal(countSpreadFields(doc), 1 + 2 * 2 ** 48);
  assert.ok(Date.now() - started < 500);
  // A cycle counts 0 here (validation refuses it afterwards).
  assert.equal(countSpreadFields(parse('{ user(id: 1) { ...A } } fragment A on User { id ...B } fragment B on User { ...A }')), 2);
});

test('hashes: verifyPassword, createUser, and updateUser only when it sets a password', () => {
  const doc = parse(`mutation($p: String, $in: UpdateUserInput!) {
    a: verifyPassword(id: 1, password: "x") b: createUser(input: {username: "u", email: "e", password: "p"}) { id }
    c: updateUser(id: 1, input: {fullName: "n"}) { id } d: updateUser(id: 1, input: {password: null}) { id }
    e: updateUser(id: 1, input: {password: $p}) { id } f: updateUser(id: 1, input: $in) { id } }`);
  assert.equal(countHashes(doc, {}), 4); // a, b, e (not given), f (not given)
  assert.equal(countHashes(doc, { p: null, in: { fullName: 'x' } }), 2);
  assert.equal(countHashes(doc, { p: 'pw', in: { password: 'pw' } }), 4);
});
