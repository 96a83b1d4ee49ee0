'use strict';
// The API's errors: one class that renders the JSON error body with its status (CONTRACT.md
// §5), and the adapters' errors that the service turns into it. Engine failures name the
// engine and host, never a connection string. The one error-handling middleware (app.js)
// renders every ApiError; anything else thrown is a 500 whose detail goes to the log only.

class ApiError extends Error {
  constructor(status, code, message, field, headers) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.headers = headers || {};
  }

  body() {
    const error = { code: this.code, message: this.message };
    if (this.field !== undefined && this.field !== null) error.field = this.field;
    return { error };
  }

  static invalid(field, message) { return new ApiError(400, 'invalid', message, field); }
  static badRequest(message, field) { return new ApiError(400, 'bad_request', message, field); }
  static unsupportedMediaType() {
    return new ApiError(415, 'unsupported_media_type', 'send the body as JSON with `content-type: application/json`');
  }
  static notFound(what, id) { return new ApiError(404, 'not_found', `no ${what} with id ${id}; check the id`); }
  static noRoute(path) { return new ApiError(404, 'not_found', `nothing at ${path}`); }
  static methodNotAllowed() { return new ApiError(405, 'method_not_allowed', 'method not allowed'); }
  static conflict(field, value) {
    return new ApiError(409, 'conflict', `${field} \`${value}\` is already taken; choose another`, field);
  }
  static refused(why) { return new ApiError(409, 'refused', why); }
  static sessionMissing() {
    return new ApiError(401, 'session_missing', 'this request needs the x-stacklab-session header the proxy adds');
  }
  static sessionExpired() {
    return new ApiError(410, 'session_expired', 'your session has expired; start a new one with POST /api/sessions');
  }
  static unauthorized() {
    return new ApiError(401, 'unauthorized', 'send the runtime credential as `Authorization: Bearer <token>`',
      undefined, { 'WWW-Authenticate': 'Bearer' });
  }
  static forbidden() { return new ApiError(403, 'forbidden', 'the credential is not valid for this instance'); }
  static tooLarge(limit) { return new ApiError(413, 'body_too_large', `the body is larger than ${limit} bytes`); }
  static unavailable(engine, reason) {
    return new ApiError(503, 'unavailable',
      `${engine} is unavailable: ${reason}; retry shortly, and if it stays down re-provision ` +
      'the session (POST /api/session/reprovision) or start a new one');
  }
  static busy(message) { return new ApiError(503, 'busy', message, undefined, { 'Retry-After': '1' }); }
  static benchmarkRunning() {
    return new ApiError(409, 'benchmark_running', 'this session is running a benchmark already; wait for its result');
  }
  static internal(detail) {
    const e = new ApiError(500, 'internal', 'the backend failed; retry, and report a bug if it persists');
    e.detail = detail;
    return e;
  }
}

// A database adapter's failure: a unique index said no (Conflict), or the engine failed.
class StoreError extends Error {}
class Conflict extends StoreError {
  constructor(field) { super(`${field} is already taken`); this.field = field; }
}

// A cache adapter's failure.
class CacheError extends Error {}
class UnknownPolicy extends CacheError {
  constructor(engine, policy, choices) {
    super(`\`${policy}\` is not a policy of ${engine}; choose one of: ${choices.join(', ')}`);
  }
}
class PolicyRefused extends CacheError {}

function fromCacheError(e) {
  if (e instanceof UnknownPolicy) return ApiError.invalid('policy', e.message);
  if (e instanceof PolicyRefused) return ApiError.refused(e.message);
  return ApiError.unavailable('the cache', e.message);
}

// One line of an engine's error, bounded; drivers do not put passwords in their messages.
function describe(e) {
  const text = String((e && e.message) || e || '').split(/\s+/).join(' ').trim();
  return (text || (e && e.code) || 'failed').slice(0, 300);
}

module.exports = { ApiError, StoreError, Conflict, CacheError, UnknownPolicy, PolicyRefused, fromCacheError, describe };
