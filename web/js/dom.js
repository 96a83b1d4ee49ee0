// A small element builder, so views build DOM without innerHTML (no markup injection from data
// the server echoes back, such as usernames and cached values).

const SVG_NS = "http://www.w3.org/2000/svg";

function set(el, attrs, isSvg) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (!isSvg && (k === "value" || k === "checked" || k === "disabled" || k === "selected")) el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** h("button", {type: "button", onclick}, "Add user") */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  set(el, attrs, false);
  append(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  set(el, attrs, true);
  append(el, children);
  return el;
}

export const byId = (id) => document.getElementById(id);

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A label + value pair for a <dl>. */
export function pair(term, value, attrs) {
  return [h("dt", null, term), h("dd", attrs || null, value)];
}

const REASONS = {
  200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
  404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 413: "Payload Too Large",
  415: "Unsupported Media Type", 429: "Too Many Requests", 500: "Internal Server Error",
  502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
};

/** A status badge: "201 Created", coloured by class. */
export function statusBadge(status) {
  const cls = status >= 500 || status === 0 ? "bad" : status >= 400 ? "warn" : "good";
  return h("span", { class: `badge http-status ${cls}`, dataset: { testid: "status" } },
    status === 0 ? "no answer" : `${status} ${REASONS[status] || ""}`.trim());
}

/** A cache outcome badge: hit, miss, bypass or none. */
export function cacheBadge(outcome) {
  const o = typeof outcome === "string" && outcome ? outcome.toLowerCase() : "none";
  return h("span", { class: `badge cache-${o}`, dataset: { testid: "cache-outcome" } }, `cache ${o}`);
}

/** Puts a field's error text next to it and marks it invalid; an empty message clears it. */
export function fieldError(input, errorEl, message) {
  if (errorEl) errorEl.textContent = message || "";
  if (input) {
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
}

/** Closes the <dialog> with this id, if open (its `open` attribute where <dialog> has no close()). */
export function closeDialog(id) {
  const dialog = byId(id);
  if (dialog.open) {
    if (typeof dialog.close === "function") dialog.close();
    else dialog.removeAttribute("open");
  }
}
