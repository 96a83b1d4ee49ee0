import { test } from "node:test";
import assert from "node:assert/strict";
import { logEdges, histogram, logTicks, tickLabel, linear, logScale, chartGeometry, barLengths } from "../js/lib/histogram.js";

test("logEdges spans all series on a log axis", () => {
  const e = logEdges([[0.01, 0.02], [1, 10]], 3);
  assert.equal(e.length, 4);
  assert.ok(Math.abs(e[0] - 0.01) < 1e-12);
  assert.ok(Math.abs(e[3] - 10) < 1e-9);
  assert.ok(Math.abs(e[1] - 0.1) < 1e-9);
  assert.deepEqual(logEdges([[], [0, -1, NaN]]), []);
  // One value only still makes a range.
  const one = logEdges([[2, 2]], 2);
  assert.ok(one[0] < 2 && one[2] > 2);
});

test("histogram puts every sample in a bin, the top one included", () => {
  const edges = [1, 2, 4, 8];
  assert.deepEqual(histogram([1, 1.5, 2, 3.9, 4, 8, 100, 0.5, NaN], edges), [3, 2, 3]);
  assert.deepEqual(histogram([1], []), []);
});

test("logTicks and labels", () => {
  assert.deepEqual(logTicks(0.8, 12), [1, 2, 5, 10]);
  assert.deepEqual(logTicks(0.001, 1000, 7), [0.001, 0.01, 0.1, 1, 10, 100, 1000]);
  assert.deepEqual(logTicks(0, 1), []);
  assert.equal(tickLabel(0.05), "0.05");
  assert.equal(tickLabel(2), "2");
  assert.equal(tickLabel(1000), "1000");
});

test("scales", () => {
  assert.equal(linear(0, 10, 100, 0)(5), 50);
  assert.equal(linear(3, 3, 0, 10)(3), 0);
  const s = logScale(1, 100, 0, 200);
  assert.equal(s(10), 100);
  assert.equal(s(0), 0);
});

test("chartGeometry draws one closed step line per series inside the plot", () => {
  const g = chartGeometry([
    { name: "writes", samples: [1, 1, 2, 4] },
    { name: "cached reads", samples: [0.01, 0.02] },
  ], { width: 400, height: 200, bins: 10 });
  assert.equal(g.empty, false);
  assert.equal(g.lines.length, 2);
  for (const line of g.lines) {
    const pts = line.points.split(" ").map((p) => p.split(",").map(Number));
    assert.equal(pts.length, 2 + 2 * 10);
    for (const [x, y] of pts) {
      assert.ok(x >= g.plot.x0 - 0.1 && x <= g.plot.x1 + 0.1, `x ${x}`);
      assert.ok(y <= g.plot.y0 + 0.1 && y >= g.plot.y1 - 0.1, `y ${y}`);
    }
    assert.equal(pts[0][1], g.plot.y0);
    assert.equal(pts[pts.length - 1][1], g.plot.y0);
  }
  assert.equal(g.lines[1].max, 0.5);
  assert.ok(g.xTicks.length >= 2);
  assert.deepEqual(g.yTicks.map((t) => t.label), ["0%", "25%", "50%"]);
  assert.equal(chartGeometry([{ name: "x", samples: [] }]).empty, true);
});

test("barLengths are shares of the slowest with a visible floor", () => {
  assert.deepEqual(barLengths([100, 50, 0.0001, 0, null]), [100, 50, 0.5, 0, 0]);
  assert.deepEqual(barLengths([]), []);
});
