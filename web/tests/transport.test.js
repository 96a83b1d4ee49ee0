import { test } from "node:test";
import assert from "node:assert/strict";
import { protocolName, transportNote } from "../js/lib/transport.js";

test("protocol names for people", () => {
  assert.equal(protocolName("h3"), "HTTP/3 (h3)");
  assert.equal(protocolName("h2"), "HTTP/2 (h2)");
  assert.equal(protocolName("http/1.1"), "HTTP/1.1");
  assert.equal(protocolName(""), "an unknown protocol");
});

// Issue 19: the UI must say plainly that the browser makes the final pick, and which it made.
test("every transport choice says the browser picks, and what it picked", () => {
  for (const [transport, page] of [["https", "h2"], ["https", "http/1.1"], ["https", "h3"], ["h3", "h3"], ["h3", "h2"]]) {
    const note = transportNote(transport, page);
    assert.match(note, /Your browser makes the final pick/, `${transport} over ${page}`);
    assert.match(note, new RegExp(`this page came over ${protocolName(page).replace(/[()/]/g, "\\$&")}`), `${transport} over ${page}`);
    assert.match(note, /The Inspector shows which protocol each request used/);
  }
});

test("HTTPS says HTTP/3 is withdrawn; HTTP/3 that it is advertised", () => {
  assert.match(transportNote("https", "h2"), /Alt-Svc: clear/);
  assert.match(transportNote("https", "h2"), /It picked TCP/);
  assert.match(transportNote("https", "h3"), /still uses HTTP\/3/);
  assert.match(transportNote("h3", "h3"), /It picked HTTP\/3/);
  assert.match(transportNote("h3", "h2"), /has not switched yet/);
  assert.equal(transportNote(undefined, "h2"), "");
  for (const t of ["https", "h3"]) {
    const note = transportNote(t, "");
    assert.match(note, /Your browser makes the final pick/);
    assert.match(note, /does not say which protocol/);
    assert.doesNotMatch(note, /It picked/);
  }
});
