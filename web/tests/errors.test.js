import { test } from "node:test";
import assert from "node:assert/strict";
import { errorFromAnswer, isSessionGone } from "../js/lib/errors.js";

test("the API's JSON error, with its field", () => {
  const e = errorFromAnswer(400, { error: { code: "invalid", message: "choose postgres", field: "database" } });
  assert.deepEqual(e, { status: 400, code: "invalid", message: "choose postgres", field: "database" });
});

test("an error without message or field still reads", () => {
  const e = errorFromAnswer(410, { error: { code: "session_expired" } });
  assert.equal(e.code, "session_expired");
  assert.equal(e.field, null);
  assert.match(e.message, /expired/);
});

test("GraphQL errors carry code and field in extensions", () => {
  const e = errorFromAnswer(200, { data: null, errors: [{ message: "username `bob` is already taken", extensions: { code: "conflict", field: "username" } }] });
  assert.deepEqual(e, { status: 200, code: "conflict", message: "username `bob` is already taken", field: "username" });
});

test("success is not an error; a page that is not JSON is", () => {
  assert.equal(errorFromAnswer(200, { ok: true }), null);
  assert.equal(errorFromAnswer(201, null, ""), null);
  const e = errorFromAnswer(502, null, "<html>bad gateway</html>");
  assert.equal(e.code, "http_502");
  assert.match(e.message, /HTTP 502/);
  assert.equal(errorFromAnswer(418, null, "teapot").message, "teapot");
  assert.match(errorFromAnswer(429, null, "").message, /too many/);
});

test("isSessionGone", () => {
  assert.equal(isSessionGone(401, "session_missing"), true);
  assert.equal(isSessionGone(410, "session_expired"), true);
  assert.equal(isSessionGone(410, "http_410"), true);
  assert.equal(isSessionGone(401, "http_401"), true);
  assert.equal(isSessionGone(401, "bad_token"), false);
  assert.equal(isSessionGone(400, "invalid"), false);
});
