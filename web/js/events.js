// The session's live feed (GET /api/session/events): EventSource when the browser has it, a
// fetch stream read with the SSE parser otherwise. While the feed is not open, `live` is false
// and the views poll instead; a feed that closes for good (the server refused it) is retried
// every 30 s, and the app is told so it can check the session.

import { createSseParser, decodeEventData, SESSION_EVENTS } from "./lib/sse.js";

const URL = "/api/session/events";
const RETRY_MS = 30000;

/**
 * @param {{onEvent: (name: string, data: object) => void, onLive?: (live: boolean) => void,
 *   onRefused?: (status: number) => void}} handlers
 * @returns {{close(): void, readonly live: boolean}}
 */
export function openEvents(handlers) {
  let live = false;
  let closed = false;
  let source = null;
  let abort = null;
  let retryTimer = null;

  const setLive = (v) => {
    if (v !== live) {
      live = v;
      handlers.onLive?.(v);
    }
  };
  const deliver = (name, raw) => {
    const data = decodeEventData(raw);
    if (data !== null) handlers.onEvent(name, data);
  };
  const retryLater = () => {
    if (closed) return;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, RETRY_MS);
  };

  function connectEventSource() {
    source = new EventSource(URL, { withCredentials: true });
    source.onopen = () => setLive(true);
    source.onerror = () => {
      setLive(false);
      // CLOSED: the server answered with an error or not with an event stream; the browser
      // will not retry by itself.
      if (source && source.readyState === EventSource.CLOSED) {
        source.close();
        source = null;
        handlers.onRefused?.(0);
        retryLater();
      }
    };
    for (const name of SESSION_EVENTS) {
      source.addEventListener(name, (ev) => deliver(name, ev.data));
    }
  }

  async function connectFetch() {
    abort = new AbortController();
    try {
      const res = await fetch(URL, {
        credentials: "same-origin",
        headers: { accept: "text/event-stream" },
        cache: "no-store",
        signal: abort.signal,
      });
      if (!res.ok || !res.body) {
        handlers.onRefused?.(res.status);
        retryLater();
        return;
      }
      setLive(true);
      const parser = createSseParser((e) => {
        if (SESSION_EVENTS.includes(e.event)) deliver(e.event, e.data);
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
      }
      parser.end();
      setLive(false);
      if (!closed) setTimeout(connect, 2000);
    } catch (e) {
      setLive(false);
      if (!closed && !(e && e.name === "AbortError")) retryLater();
    }
  }

  function connect() {
    if (closed) return;
    if (typeof EventSource === "function") connectEventSource();
    else connectFetch();
  }

  connect();

  return {
    close() {
      closed = true;
      clearTimeout(retryTimer);
      source?.close();
      source = null;
      abort?.abort();
      setLive(false);
    },
    get live() {
      return live;
    },
  };
}
