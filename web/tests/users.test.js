import { test } from "node:test";
import assert from "node:assert/strict";
import {
  buildRequest, normalizeUser, normalizeUserList, readResult, describeRequest, maskPasswords, GQL,
} from "../js/lib/users.js";

test("REST requests", () => {
  assert.deepEqual(buildRequest("rest", "create", { username: " ann ", email: "a@x.io", password: "pw pw pw ", full_name: "" }), {
    method: "POST", path: "/api/users", body: { username: "ann", email: "a@x.io", password: "pw pw pw " },
  });
  assert.deepEqual(buildRequest("rest", "search", { q: "an n", limit: "10", offset: "" }), {
    method: "GET", path: "/api/users?q=an+n&limit=10",
  });
  assert.deepEqual(buildRequest("rest", "search", {}), { method: "GET", path: "/api/users?q=" });
  assert.deepEqual(buildRequest("rest", "get", { id: "7" }), { method: "GET", path: "/api/users/7" });
  assert.deepEqual(buildRequest("rest", "update", { id: 7, email: "b@x.io", full_name: "", password: "" }), {
    method: "PATCH", path: "/api/users/7", body: { email: "b@x.io", full_name: "" },
  });
  assert.deepEqual(buildRequest("rest", "delete", { id: 7 }), { method: "DELETE", path: "/api/users/7" });
  assert.deepEqual(buildRequest("rest", "verify", { id: 7, password: "secret12" }), {
    method: "POST", path: "/api/users/7/verify-password", body: { password: "secret12" },
  });
});

test("GraphQL requests use the backend's schema names", () => {
  const c = buildRequest("graphql", "create", { username: "ann", email: "a@x.io", password: "pw", full_name: "Ann A" });
  assert.equal(c.method, "POST");
  assert.equal(c.path, "/graphql");
  assert.equal(c.body.query, GQL.create);
  assert.match(c.body.query, /createUser\(input: \$input\)/);
  assert.match(c.body.query, /\$input: CreateUserInput!/);
  assert.match(c.body.query, /storedPassword/);
  assert.deepEqual(c.body.variables, { input: { username: "ann", email: "a@x.io", password: "pw", fullName: "Ann A" } });

  const s = buildRequest("graphql", "search", { q: "", limit: "5", offset: "0" });
  assert.deepEqual(s.body.variables, { limit: 5, offset: 0 });
  assert.match(s.body.query, /users\(q: \$q, limit: \$limit, offset: \$offset\)/);
  assert.match(s.body.query, /items \{/);

  const u = buildRequest("graphql", "update", { id: "3", full_name: "" });
  assert.deepEqual(u.body.variables, { id: 3, input: { fullName: "" } });
  assert.match(u.body.query, /updateUser\(id: \$id, input: \$input\)/);
  assert.match(u.body.query, /\$id: Int!/);

  assert.deepEqual(buildRequest("graphql", "delete", { id: 3 }).body.variables, { id: 3 });
  assert.deepEqual(buildRequest("graphql", "get", { id: 3 }).body.variables, { id: 3 });
  const v = buildRequest("graphql", "verify", { id: 3, password: "x" });
  assert.deepEqual(v.body.variables, { id: 3, password: "x" });
  assert.match(v.body.query, /verifyPassword\(id: \$id, password: \$password\)/);
});

test("bad arguments are refused before anything is sent, naming the field", () => {
  assert.throws(() => buildRequest("rest", "delete", { id: "" }), (e) => e.field === "id");
  assert.throws(() => buildRequest("rest", "get", { id: "-1" }), (e) => e.field === "id");
  assert.throws(() => buildRequest("graphql", "update", { id: "1.5" }), (e) => e.field === "id");
  assert.throws(() => buildRequest("rest", "search", { limit: "ten" }), (e) => e.field === "limit");
  assert.throws(() => buildRequest("rest", "nope", {}), /unknown action/);
});

test("normalizeUser maps GraphQL's camelCase to the REST shape", () => {
  assert.deepEqual(
    normalizeUser({ id: 1, username: "a", email: "e", fullName: "F", storedPassword: "$argon2id$…", storedEmail: "e", createdAt: 5, updatedAt: 6 }),
    { id: 1, username: "a", email: "e", fullName: "F", storedPassword: "$argon2id$…", storedEmail: "e", createdAt: 5, updatedAt: 6,
      full_name: "F", stored_password: "$argon2id$…", stored_email: "e", created_at: 5, updated_at: 6 },
  );
  assert.equal(normalizeUser({ id: 2, stored_password: "pw" }).stored_password, "pw");
  assert.equal(normalizeUser(null), null);
});

test("normalizeUserList takes an array, {users}, or {items} with a total", () => {
  assert.deepEqual(normalizeUserList([{ id: 1 }]).users.map((u) => u.id), [1]);
  assert.equal(normalizeUserList([{ id: 1 }]).total, 1);
  assert.deepEqual(normalizeUserList({ users: [{ id: 2 }], total: 9 }).total, 9);
  assert.deepEqual(normalizeUserList({ items: [{ id: 3 }, null], total: 1, limit: 20, offset: 0 }).users.map((u) => u.id), [3]);
  assert.deepEqual(normalizeUserList({}), { users: [], total: 0 });
});

test("readResult per protocol", () => {
  assert.deepEqual(readResult("rest", "delete", { deleted: true }), { deleted: true });
  assert.deepEqual(readResult("graphql", "delete", { data: { deleteUser: true } }), { deleted: true });
  assert.deepEqual(readResult("rest", "verify", { ok: false }), { verified: false });
  assert.deepEqual(readResult("graphql", "verify", { data: { verifyPassword: true } }), { verified: true });
  assert.equal(readResult("graphql", "create", { data: { createUser: { id: 4, storedPassword: "h" } } }).user.stored_password, "h");
  assert.equal(readResult("graphql", "search", { data: { users: { items: [{ id: 1 }], total: 7 } } }).total, 7);
  assert.equal(readResult("rest", "get", { id: 9, stored_password: "p" }).user.id, 9);
  assert.equal(readResult("graphql", "get", { data: null, errors: [] }).user, null);
});

test("describeRequest shows the line and the body, passwords masked", () => {
  const r = describeRequest(buildRequest("rest", "create", { username: "a", email: "e", password: "hunter22" }));
  assert.equal(r.line, "POST /api/users");
  assert.match(r.body, /"password": "••••••••"/);
  assert.doesNotMatch(r.body, /hunter22/);
  const g = describeRequest(buildRequest("graphql", "verify", { id: 1, password: "hunter22" }));
  assert.match(g.body, /^mutation VerifyPassword/);
  assert.match(g.body, /variables: /);
  assert.doesNotMatch(g.body, /hunter22/);
  assert.deepEqual(describeRequest({ method: "GET", path: "/api/users/1" }), { line: "GET /api/users/1", body: "" });
  assert.deepEqual(maskPasswords({ a: [{ password: "xy" }], n: 1 }), { a: [{ password: "••" }], n: 1 });
});
