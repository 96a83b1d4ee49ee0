// Every call to the server goes through here: JSON in and out, the session cookie sent
// (credentials: same-origin; the cookie is HttpOnly, the page never sees it), errors turned
// into ApiError {status, code, message, field}, and 401 session_missing / 410 session_expired
// reported once to whoever registered with onSessionGone (the app opens the expired dialog);
// a 503 `unavailable` on a data request (the session's stack is broken) is reported to
// onUnavailable (the app then reads the session, which says what happened).

import { errorFromAnswer, isSessionGone } from "./lib/errors.js";

export class ApiError extends Error {
  constructor({ status = 0, code = "error", message = "request failed", field = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.sessionGone = isSessionGone(status, code);
  }
}

let goneHandler = null;
/** Registers the function called when an answer says the session is missing or expired. */
export function onSessionGone(fn) {
  goneHandler = fn;
}

let unavailableHandler = null;
/** Registers the function called when a session's request answers 503 `unavailable`. */
export function onUnavailable(fn) {
  unavailableHandler = fn;
}

/** Paths that need no session: a 401 there is not "your session expired". */
const SESSIONLESS = new Set(["/api/sessions", "/api/options"]);

function pathOf(path) {
  return path.split("?")[0];
}

/**
 * Sends a request and returns the whole answer, errors included (the console shows them).
 * @param {string} method
 * @param {string} path
 * @param {{body?: any, signal?: AbortSignal, quiet?: boolean}} opts quiet: do not report a
 *   gone session (used where a missing session is expected, e.g. on page load).
 * @returns {Promise<{status, ok, headers: Headers, data, text, ms, error}>}
 *   error is null or {status, code, message, field}. A network failure answers status 0.
 */
export async function request(method, path, opts = {}) {
  const { body, signal, quiet = false } = opts;
  const headers = { accept: "application/json" };
  const init = { method, credentials: "same-origin", headers, cache: "no-store", signal };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const t0 = performance.now();
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    const error = {
      status: 0,
      code: "network",
      message: "the server could not be reached; check that stacklab is running and try again",
      field: null,
    };
    return { status: 0, ok: false, headers: new Headers(), data: null, text: "", ms: performance.now() - t0, error };
  }
  const text = await res.text().catch(() => "");
  const ms = performance.now() - t0;
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  const error = errorFromAnswer(res.status, data, text);
  if (
    error &&
    !quiet &&
    (res.status === 401 || res.status === 410) &&
    isSessionGone(res.status, error.code) &&
    !SESSIONLESS.has(pathOf(path))
  ) {
    goneHandler?.(error);
  }
  if (
    error &&
    res.status === 503 &&
    error.code === "unavailable" &&
    !SESSIONLESS.has(pathOf(path)) &&
    !pathOf(path).startsWith("/api/session")
  ) {
    unavailableHandler?.(error);
  }
  return { status: res.status, ok: res.ok && !error, headers: res.headers, data, text, ms, error };
}

/** Sends a request and returns its JSON, or throws ApiError. */
export async function api(method, path, opts) {
  const answer = await request(method, path, opts);
  if (answer.error) throw new ApiError(answer.error);
  return answer.data;
}
