// Draws a timing breakdown (see lib/timing.js) as a bar of four coloured parts with a legend,
// readable without colour (the legend names each part and its time) and by a screen reader
// (the bar is an image whose label says it all).

import { h } from "./dom.js";
import { describeBreakdown } from "./lib/timing.js";
import { formatMs } from "./lib/format.js";

/**
 * @param {{total: number, segments: {key, label, ms, pct}[]}} b
 * @param {{caption?: string, testid?: string}} opts
 */
export function timingBar(b, { caption = "Where the time went", testid = "timing-bar" } = {}) {
  const bar = h("div", { class: "timing-bar", role: "img", "aria-label": `${caption}: ${describeBreakdown(b, formatMs)}` },
    b.segments.map((seg) =>
      h("span", {
        class: `seg seg-${seg.key}`,
        style: { width: `${seg.pct.toFixed(2)}%` },
        title: `${seg.label} ${formatMs(seg.ms)}`,
        dataset: { part: seg.key, ms: String(seg.ms) },
      })));
  const legend = h("ul", { class: "timing-legend", "aria-hidden": "true" },
    b.segments.map((seg) =>
      h("li", null, h("span", { class: `swatch seg-${seg.key}` }), `${seg.label} `, h("b", null, formatMs(seg.ms)))),
    h("li", { class: "total" }, "total ", h("b", null, formatMs(b.total))));
  return h("figure", { class: "timing", dataset: { testid, total: String(b.total) } },
    h("figcaption", null, caption), bar, legend);
}
