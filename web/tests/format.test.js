import { test } from "node:test";
import assert from "node:assert/strict";
import {
  formatMs, formatBytes, formatCount, formatRate, formatPercent, formatCountdown,
  formatTtl, shortCode, formatClock, timeLeft, prettyJson,
} from "../js/lib/format.js";

test("formatMs picks a precision a person can read", () => {
  assert.equal(formatMs(undefined), "–");
  assert.equal(formatMs(NaN), "–");
  assert.equal(formatMs(0), "0 ms");
  assert.equal(formatMs(0.004), "<0.01 ms");
  assert.equal(formatMs(0.123), "0.12 ms");
  assert.equal(formatMs(3.4), "3.40 ms");
  assert.equal(formatMs(42.06), "42.1 ms");
  assert.equal(formatMs(512.4), "512 ms");
  assert.equal(formatMs(1250), "1.25 s");
  assert.equal(formatMs(-3), "0 ms");
});

test("formatBytes uses binary units", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(12 * 1024 * 1024), "12.0 MiB");
  assert.equal(formatBytes(null), "–");
});

test("formatCount groups thousands the same on every locale", () => {
  assert.equal(formatCount(0), "0");
  assert.equal(formatCount(999), "999");
  assert.equal(formatCount(1234567), "1,234,567");
  assert.equal(formatCount(-1234.5), "-1,234.5");
  assert.equal(formatCount("x"), "–");
});

test("formatRate and formatPercent", () => {
  assert.equal(formatRate(12345.6), "12,346 ops/s");
  assert.equal(formatRate(3.44), "3.4 ops/s");
  assert.equal(formatPercent(0.8123), "81.2%");
  assert.equal(formatPercent(null), "–");
  assert.equal(formatPercent(1), "100.0%");
});

test("formatCountdown shows minutes and seconds, hours when needed", () => {
  assert.equal(formatCountdown(3599000), "59:59");
  assert.equal(formatCountdown(3723000), "1:02:03");
  assert.equal(formatCountdown(999), "0:00");
  assert.equal(formatCountdown(-5), "0:00");
  assert.equal(formatCountdown(61000), "1:01");
});

test("formatTtl", () => {
  assert.equal(formatTtl(null), "no expiry");
  assert.equal(formatTtl(undefined), "no expiry");
  assert.equal(formatTtl(0), "expiring");
  assert.equal(formatTtl(4200), "5s");
  assert.equal(formatTtl(61000), "1m 1s");
  assert.equal(formatTtl(2 * 3600 * 1000 + 60000), "2h 1m");
});

test("shortCode keeps the ends of a long code", () => {
  assert.equal(shortCode("abcdefghijklmnopqrstuvwxyz"), "abcdef…wxyz");
  assert.equal(shortCode("short"), "short");
  assert.equal(shortCode(undefined), "");
});

test("formatClock in a given offset", () => {
  assert.equal(formatClock(Date.UTC(2024, 0, 1, 13, 4, 5, 7), 0), "13:04:05.007");
  assert.equal(formatClock(Date.UTC(2024, 0, 1, 13, 4, 5, 7), 60), "14:04:05.007");
  assert.match(formatClock(Date.now()), /^\d\d:\d\d:\d\d\.\d{3}$/);
  assert.equal(formatClock(undefined), "–");
});

test("timeLeft takes the earlier of sliding and hard expiry", () => {
  assert.equal(timeLeft({ expires_at: 5000, hard_expires_at: 9000 }, 1000), 4000);
  assert.equal(timeLeft({ expires_at: 5000, hard_expires_at: 3000 }, 1000), 2000);
  assert.equal(timeLeft({ expires_at: 5000 }, 1000), 4000);
  assert.equal(timeLeft({}, 1000), null);
  assert.equal(timeLeft(null, 1000), null);
});

test("prettyJson indents JSON and leaves other text alone", () => {
  assert.equal(prettyJson('{"a":1}'), '{\n  "a": 1\n}');
  assert.equal(prettyJson("not json"), "not json");
  assert.equal(prettyJson({ b: [1] }), '{\n  "b": [\n    1\n  ]\n}');
  assert.equal(prettyJson(undefined), "");
});
