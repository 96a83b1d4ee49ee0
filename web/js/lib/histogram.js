// The benchmark chart's math: latency samples binned on a logarithmic axis (reads through a
// cache and database writes differ by orders of magnitude), and the geometry of an SVG chart
// with one step line per series. Also the bar lengths of the password hashing chart.
// Pure, unit-tested in web/tests/histogram.test.js.

const finitePositive = (x) => typeof x === "number" && Number.isFinite(x) && x > 0;

/**
 * Bin edges spaced evenly in log10 between the smallest and largest sample of all series.
 * Samples of 0 are treated as the smallest positive one (or 0.001 ms).
 */
export function logEdges(seriesSamples, bins = 24) {
  const all = seriesSamples.flat().filter(finitePositive);
  if (all.length === 0) return [];
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (hi / lo < 1.0001) {
    lo /= 1.5;
    hi *= 1.5;
  }
  const a = Math.log10(lo);
  const b = Math.log10(hi);
  const edges = [];
  for (let i = 0; i <= bins; i++) edges.push(10 ** (a + ((b - a) * i) / bins));
  // Floating point must not leave the extremes outside.
  edges[0] = Math.min(edges[0], lo);
  edges[bins] = Math.max(edges[bins], hi);
  return edges;
}

/** Counts per bin; bin i holds edges[i] <= x < edges[i+1], the last bin includes its top. */
export function histogram(samples, edges) {
  const n = Math.max(0, edges.length - 1);
  const counts = new Array(n).fill(0);
  if (n === 0) return counts;
  const floor = edges[0];
  for (let x of samples) {
    if (typeof x !== "number" || !Number.isFinite(x)) continue;
    if (x < floor) x = floor;
    let lo = 0;
    let hi = n - 1;
    if (x >= edges[n]) {
      counts[n - 1] += 1;
      continue;
    }
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (edges[mid] <= x) lo = mid;
      else hi = mid - 1;
    }
    counts[lo] += 1;
  }
  return counts;
}

/** Ticks at 1, 2, 5 × 10^k inside [lo, hi] (fewer if crowded). */
export function logTicks(lo, hi, max = 7) {
  if (!finitePositive(lo) || !finitePositive(hi) || hi < lo) return [];
  const ticks = [];
  for (let k = Math.floor(Math.log10(lo)) - 1; k <= Math.ceil(Math.log10(hi)); k++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** k;
      if (v >= lo * 0.9999 && v <= hi * 1.0001) ticks.push(Number(v.toPrecision(6)));
    }
  }
  if (ticks.length <= max) return ticks;
  const decades = ticks.filter((t) => Number((t / 10 ** Math.floor(Math.log10(t))).toPrecision(3)) === 1);
  if (decades.length >= 2 && decades.length <= max) return decades;
  const step = Math.ceil(ticks.length / max);
  return ticks.filter((_, i) => i % step === 0);
}

/** A tick label: 0.01 → "0.01", 2 → "2", 1000 → "1000" (ms). */
export function tickLabel(v) {
  if (v >= 1) return String(Math.round(v * 100) / 100);
  return String(Number(v.toPrecision(2)));
}

/** Linear map from [d0, d1] to [r0, r1]. */
export function linear(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  return (x) => r0 + ((x - d0) / span) * (r1 - r0);
}

/** Log10 map from [d0, d1] (positive) to [r0, r1]. */
export function logScale(d0, d1, r0, r1) {
  const a = Math.log10(d0);
  const b = Math.log10(d1);
  const f = linear(a, b, r0, r1);
  return (x) => f(Math.log10(Math.max(x, d0)));
}

/**
 * The whole chart: for each series a step polyline of the share of its operations per bin (so
 * series of different sizes compare), x ticks, y ticks.
 * @param {{name: string, samples: number[]}[]} series
 * @returns {{width, height, plot: {x0,x1,y0,y1}, lines: {name, points: string, max: number}[],
 *   xTicks: {x, label}[], yTicks: {y, label}[], empty: boolean}}
 */
export function chartGeometry(series, { width = 640, height = 260, bins = 24, margin } = {}) {
  const m = { top: 12, right: 16, bottom: 40, left: 48, ...(margin || {}) };
  const plot = { x0: m.left, x1: width - m.right, y0: height - m.bottom, y1: m.top };
  const edges = logEdges(series.map((s) => s.samples || []), bins);
  if (edges.length === 0) {
    return { width, height, plot, lines: [], xTicks: [], yTicks: [], empty: true };
  }
  const shares = series.map((s) => {
    const counts = histogram(s.samples || [], edges);
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    return counts.map((c) => c / total);
  });
  const top = Math.max(0.01, ...shares.flat());
  const yMax = Math.min(1, Math.ceil(top * 10) / 10);
  const x = logScale(edges[0], edges[edges.length - 1], plot.x0, plot.x1);
  const y = linear(0, yMax, plot.y0, plot.y1);
  const r = (v) => Math.round(v * 10) / 10;
  const lines = series.map((s, i) => {
    const pts = [[x(edges[0]), y(0)]];
    shares[i].forEach((share, b) => {
      pts.push([x(edges[b]), y(share)]);
      pts.push([x(edges[b + 1]), y(share)]);
    });
    pts.push([x(edges[edges.length - 1]), y(0)]);
    return {
      name: s.name,
      points: pts.map(([px, py]) => `${r(px)},${r(py)}`).join(" "),
      max: Math.max(...shares[i]),
    };
  });
  const xTicks = logTicks(edges[0], edges[edges.length - 1]).map((v) => ({ x: r(x(v)), label: tickLabel(v) }));
  const yTicks = [0, yMax / 2, yMax].map((v) => ({ y: r(y(v)), label: `${Math.round(v * 100)}%` }));
  return { width, height, plot, lines, xTicks, yTicks, empty: false };
}

/**
 * Bars for the hashing chart: each mode's share of the slowest, with a floor so a 0.001 ms
 * hash is still visible as a sliver.
 */
export function barLengths(values, { minPct = 0.5 } = {}) {
  const max = Math.max(0, ...values.filter(finitePositive));
  return values.map((v) => {
    if (!finitePositive(v) || max === 0) return 0;
    return Math.max(minPct, (v / max) * 100);
  });
}
