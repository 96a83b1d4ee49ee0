// Server-Sent Events, the parsing half: an incremental parser that follows the WHATWG
// "event stream interpretation" rules (used when the page reads the stream with fetch, where
// EventSource is missing), and the decoding of one event's JSON data (used for every event).
// Pure, unit-tested in web/tests/sse.test.js.

/**
 * Makes a parser. Feed it text chunks as they arrive, cut anywhere; it calls
 * `onEvent({event, data, id})` for each complete event. `event` is "message" when unnamed.
 */
export function createSseParser(onEvent) {
  let buffer = "";
  let first = true;
  let data = [];
  let event = "";
  let lastId = "";
  let retry = null;
  let pendingCR = false;

  function dispatch() {
    if (data.length > 0) {
      onEvent({ event: event || "message", data: data.join("\n"), id: lastId });
    }
    data = [];
    event = "";
  }

  function line(l) {
    if (l === "") return dispatch();
    if (l.startsWith(":")) return undefined; // comment, e.g. a keep-alive
    const colon = l.indexOf(":");
    const field = colon === -1 ? l : l.slice(0, colon);
    let value = colon === -1 ? "" : l.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id") {
      if (!value.includes("\0")) lastId = value;
    } else if (field === "retry") {
      if (/^\d+$/.test(value)) retry = Number(value);
    }
    return undefined;
  }

  return {
    feed(chunk) {
      if (first && chunk.length > 0) {
        if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
        first = false;
      }
      let text = buffer + chunk;
      // A "\r" that ended the last chunk already ended a line: a "\n" right after belongs to it.
      if (pendingCR && text.startsWith("\n")) text = text.slice(1);
      pendingCR = false;
      let start = 0;
      for (let i = 0; i < text.length; i++) {
        const c = text[i];
        if (c === "\n" || c === "\r") {
          line(text.slice(start, i));
          if (c === "\r") {
            if (i + 1 < text.length) {
              if (text[i + 1] === "\n") i++;
            } else {
              pendingCR = true;
            }
          }
          start = i + 1;
        }
      }
      buffer = text.slice(start);
    },
    /** The stream ended: an unterminated event is dropped, as the spec says. */
    end() {
      buffer = "";
      data = [];
      event = "";
    },
    get retry() {
      return retry;
    },
    get lastEventId() {
      return lastId;
    },
  };
}

/** One event's data as JSON, or null when it is not JSON (the event is then ignored). */
export function decodeEventData(data) {
  if (typeof data !== "string" || data.trim() === "") return {};
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}

/** The event names the session stream sends. */
export const SESSION_EVENTS = ["step", "state", "lost", "request", "cache", "expired"];
