// Formatting for people: milliseconds, bytes, counts, countdowns, TTLs, session codes.
// Pure functions (no DOM), unit-tested in web/tests/format.test.js.

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/** "0.12 ms", "3.40 ms", "42.1 ms", "512 ms", "1.25 s"; "–" when unknown. */
export function formatMs(ms) {
  if (!isNum(ms)) return "–";
  if (ms < 0) ms = 0;
  if (ms === 0) return "0 ms";
  if (ms < 0.01) return "<0.01 ms";
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 100) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/** "0 B", "512 B", "1.5 KiB", "12.0 MiB". */
export function formatBytes(n) {
  if (!isNum(n)) return "–";
  if (n < 1024) return `${Math.max(0, Math.round(n))} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** 1234567 → "1,234,567" (same output on every locale, so tests and screenshots agree). */
export function formatCount(n) {
  if (!isNum(n)) return "–";
  const sign = n < 0 ? "-" : "";
  const [int, frac] = Math.abs(n).toString().split(".");
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return sign + grouped + (frac ? `.${frac}` : "");
}

/** Operations per second, rounded for reading: "12,345 ops/s", "3.4 ops/s". */
export function formatRate(opsPerSec) {
  if (!isNum(opsPerSec)) return "–";
  const v = opsPerSec >= 100 ? Math.round(opsPerSec) : Math.round(opsPerSec * 10) / 10;
  return `${formatCount(v)} ops/s`;
}

/** 0.8123 → "81.2%"; null (no lookups yet) → "–". */
export function formatPercent(ratio) {
  if (!isNum(ratio)) return "–";
  return `${(ratio * 100).toFixed(1)}%`;
}

/** A countdown: 3599000 → "59:59", 3723000 → "1:02:03"; negative → "0:00". */
export function formatCountdown(ms) {
  if (!isNum(ms) || ms <= 0) return "0:00";
  const total = Math.floor(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const pad = (x) => String(x).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

/** Time to live of a cache entry: null → "no expiry", 61000 → "1m 1s", 4200 → "4s". */
export function formatTtl(ttlMs) {
  if (ttlMs === null || ttlMs === undefined) return "no expiry";
  if (!isNum(ttlMs)) return "–";
  if (ttlMs <= 0) return "expiring";
  const total = Math.ceil(ttlMs / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

/** A long session code shortened for the header: "abcdef…wxyz". */
export function shortCode(code) {
  if (typeof code !== "string") return "";
  return code.length > 12 ? `${code.slice(0, 6)}…${code.slice(-4)}` : code;
}

/** Unix ms → "14:03:07.123" in the given time-zone offset (minutes east of UTC; default local). */
export function formatClock(unixMs, offsetMinutes) {
  if (!isNum(unixMs)) return "–";
  const off = isNum(offsetMinutes) ? offsetMinutes : -new Date(unixMs).getTimezoneOffset();
  const d = new Date(unixMs + off * 60000);
  const pad = (x, n = 2) => String(x).padStart(n, "0");
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
}

/** The time left until the earlier of the sliding and the hard expiry. */
export function timeLeft(session, now) {
  if (!session) return null;
  const ends = [session.expires_at, session.hard_expires_at].filter(isNum);
  if (ends.length === 0) return null;
  return Math.min(...ends) - now;
}

/** Pretty JSON for display; text that is not JSON comes back as it is. */
export function prettyJson(value) {
  if (value === undefined) return "";
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}
