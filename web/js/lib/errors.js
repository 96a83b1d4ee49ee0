// Turning an answer into an error a person can act on. The API's errors are
// {"error": {"code", "message", "field"?}}; GraphQL answers 200 with {"errors": [{"message",
// "extensions": {"code", "field"}}]}; anything else (a proxy page, plain text) still gets a
// message. Pure, unit-tested in web/tests/errors.test.js.

const STATUS_TEXT = {
  400: "the request was not accepted",
  401: "there is no session",
  403: "not allowed",
  404: "not found",
  409: "refused",
  410: "the session has expired",
  413: "too large",
  415: "not JSON",
  429: "too many requests from this address; wait a minute and try again",
  500: "the server failed",
  502: "the backend did not answer",
  503: "unavailable right now",
  504: "the backend took too long",
};

/**
 * @returns {{status: number, code: string, message: string, field: string|null}|null}
 *   null when the answer is not an error.
 */
export function errorFromAnswer(status, body, text) {
  const e = body && typeof body === "object" ? body.error : null;
  if (e && typeof e === "object") {
    return {
      status,
      code: typeof e.code === "string" ? e.code : `http_${status}`,
      message: typeof e.message === "string" && e.message ? e.message : STATUS_TEXT[status] || `HTTP ${status}`,
      field: typeof e.field === "string" && e.field ? e.field : null,
    };
  }
  if (typeof e === "string") {
    return { status, code: `http_${status}`, message: e, field: null };
  }
  if (body && Array.isArray(body.errors) && body.errors.length > 0) {
    const g = body.errors[0] || {};
    const ext = g.extensions && typeof g.extensions === "object" ? g.extensions : {};
    return {
      status,
      code: typeof ext.code === "string" ? ext.code : "graphql",
      message: body.errors.map((x) => x?.message).filter(Boolean).join("; ") || "the query failed",
      field: typeof ext.field === "string" ? ext.field : null,
    };
  }
  if (status >= 200 && status < 400) return null;
  const snippet = typeof text === "string" ? text.trim().slice(0, 200) : "";
  return {
    status,
    code: `http_${status}`,
    message: STATUS_TEXT[status] ? `${STATUS_TEXT[status]} (HTTP ${status})` : snippet || `HTTP ${status}`,
    field: null,
  };
}

/** Whether an answer says the session is gone (the UI then offers a new one). */
export function isSessionGone(status, code) {
  if (code === "session_missing" || code === "session_expired") return true;
  return status === 410 || (status === 401 && (code === undefined || code === null || code.startsWith("http_")));
}
