import { test } from "node:test";
import assert from "node:assert/strict";
import { createSseParser, decodeEventData, SESSION_EVENTS } from "../js/lib/sse.js";

function collect(chunks) {
  const events = [];
  const p = createSseParser((e) => events.push(e));
  for (const c of chunks) p.feed(c);
  return { events, p };
}

test("named events with JSON data", () => {
  const { events } = collect(['event: step\ndata: {"name":"database","status":"done","ms":12}\n\n']);
  assert.deepEqual(events, [{ event: "step", data: '{"name":"database","status":"done","ms":12}', id: "" }]);
});

test("unnamed events are 'message'; several data lines join with newlines", () => {
  const { events } = collect(["data: a\ndata: b\n\n"]);
  assert.deepEqual(events, [{ event: "message", data: "a\nb", id: "" }]);
});

test("chunks cut anywhere, even inside CRLF", () => {
  const text = 'event: state\r\ndata: {"state":"ready"}\r\n\r\nevent: expired\r\ndata: {}\r\n\r\n';
  for (let cut = 1; cut < text.length; cut++) {
    const { events } = collect([text.slice(0, cut), text.slice(cut)]);
    assert.deepEqual(events.map((e) => [e.event, e.data]), [["state", '{"state":"ready"}'], ["expired", "{}"]], `cut at ${cut}`);
  }
  // One character at a time.
  const { events } = collect([...text]);
  assert.equal(events.length, 2);
});

test("bare CR line ends, comments, ids, retry, no space after the colon, BOM", () => {
  const { events, p } = collect(["\uFEFF: keep-alive\rretry: 1500\rid: 7\revent:cache\rdata:{\"engine\":\"memory\"}\r\r"]);
  assert.deepEqual(events, [{ event: "cache", data: '{"engine":"memory"}', id: "7" }]);
  assert.equal(p.retry, 1500);
  assert.equal(p.lastEventId, "7");
});

test("an event without data is not dispatched, and the event name does not leak", () => {
  const { events } = collect(["event: step\n\ndata: x\n\n"]);
  assert.deepEqual(events, [{ event: "message", data: "x", id: "" }]);
});

test("an unterminated event at the end is dropped", () => {
  const events = [];
  const p = createSseParser((e) => events.push(e));
  p.feed("data: half");
  p.end();
  assert.deepEqual(events, []);
});

test("decodeEventData", () => {
  assert.deepEqual(decodeEventData('{"state":"ready"}'), { state: "ready" });
  assert.deepEqual(decodeEventData(""), {});
  assert.equal(decodeEventData("{nope"), null);
  assert.deepEqual(SESSION_EVENTS, ["step", "state", "lost", "request", "cache", "expired"]);
});
