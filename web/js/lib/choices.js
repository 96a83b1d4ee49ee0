// The stack picker's rules, from the GET /api/options answer:
// - an option with "available": false is disabled with the server's reason;
// - an option with "provisioners": [...] is disabled unless the chosen provisioner is listed;
// - cache_policy options carry "caches": [...]; only those of the chosen cache are shown, and
//   the policy resets to the choice's "default_for"[cache] when the cache changes;
// - a runtime option may carry "unsupported": [{field, value, reason}]: with that runtime
//   chosen, those options are disabled with the reason;
// - a selection is reconciled after every change so it only ever holds enabled options.
// Pure functions, unit-tested in web/tests/choices.test.js.

/** The choices array from the answer, defensively (an object with "choices", or an array). */
export function normalizeChoices(json) {
  const list = Array.isArray(json) ? json : Array.isArray(json?.choices) ? json.choices : [];
  return list
    .filter((c) => c && typeof c.field === "string")
    .map((c) => ({
      ...c,
      label: c.label || c.field,
      description: c.description || "",
      options: (Array.isArray(c.options) ? c.options : [])
        .filter((o) => o && typeof o.value === "string")
        .map((o) => ({ ...o, label: o.label || o.value, description: o.description || "" })),
    }));
}

/**
 * The order the picker shows: the provisioner first (it decides which engines can be had), the
 * rest as the server sent them, the cache policy right after the cache.
 */
export function orderChoices(choices) {
  const rest = choices.filter((c) => c.field !== "provisioner" && c.field !== "cache_policy");
  const out = [
    ...choices.filter((c) => c.field === "provisioner"),
  ];
  for (const c of rest) {
    out.push(c);
    if (c.field === "cache") out.push(...choices.filter((p) => p.field === "cache_policy"));
  }
  // A cache_policy without a cache choice still appears.
  for (const c of choices) if (!out.includes(c)) out.push(c);
  return out;
}

function labelOf(choices, field, value) {
  const c = choices.find((x) => x.field === field);
  const o = c?.options.find((x) => x.value === value);
  return o?.label || value;
}

function joinOr(words) {
  if (words.length <= 1) return words.join("");
  return `${words.slice(0, -1).join(", ")} or ${words[words.length - 1]}`;
}

/**
 * Whether an option is shown and can be picked under a selection, and why not.
 * @returns {{visible: boolean, enabled: boolean, reason: string}}
 */
export function optionState(choices, choice, option, selection) {
  if (Array.isArray(option.caches) && choice.field === "cache_policy") {
    if (!option.caches.includes(selection.cache)) {
      return { visible: false, enabled: false, reason: "belongs to another cache" };
    }
  }
  if (option.available === false) {
    return {
      visible: true,
      enabled: false,
      reason: option.reason || "this install cannot offer it",
    };
  }
  if (choice.field !== "runtime" && selection.runtime !== undefined) {
    const runtime = choices.find((c) => c.field === "runtime")?.options.find((o) => o.value === selection.runtime);
    const refused = Array.isArray(runtime?.unsupported)
      ? runtime.unsupported.find((u) => u?.field === choice.field && u?.value === option.value)
      : undefined;
    if (refused) {
      return {
        visible: true,
        enabled: false,
        reason: `${runtime.label || runtime.value} does not offer it: ${refused.reason || "not implemented"}`,
      };
    }
  }
  if (
    Array.isArray(option.provisioners) &&
    choice.field !== "provisioner" &&
    selection.provisioner !== undefined &&
    !option.provisioners.includes(selection.provisioner)
  ) {
    const names = option.provisioners.map((p) => labelOf(choices, "provisioner", p));
    const here = labelOf(choices, "provisioner", selection.provisioner);
    const reason =
      names.length === 0
        ? "no provisioner of this install can give it"
        : `${here} cannot give it: choose ${joinOr(names)} under “${
            choices.find((c) => c.field === "provisioner")?.label || "Provisioner"
          }”`;
    return { visible: true, enabled: false, reason };
  }
  return { visible: true, enabled: true, reason: "" };
}

/** The options of a choice that are shown under a selection, each with its state. */
export function visibleOptions(choices, choice, selection) {
  return choice.options
    .map((o) => ({ option: o, ...optionState(choices, choice, o, selection) }))
    .filter((x) => x.visible);
}

/**
 * Dependency order for reconciling: provisioner and runtime (they decide what the others can
 * be), then cache, then the rest, cache_policy last.
 */
function reconcileOrder(choices) {
  const rank = (f) => (f === "provisioner" || f === "runtime" ? 0 : f === "cache" ? 1 : f === "cache_policy" ? 3 : 2);
  return [...choices].sort((a, b) => rank(a.field) - rank(b.field));
}

function preferredDefault(choice, selection) {
  if (choice.default_for && typeof choice.default_for === "object" && selection.cache in choice.default_for) {
    return choice.default_for[selection.cache];
  }
  return choice.default;
}

/**
 * Makes a selection valid: every field holds a shown, enabled option. A field whose value is not
 * valid falls back to its default, then to its first enabled option. When `changed` is "cache",
 * the cache policy is reset to the default for the new cache.
 * @returns {{selection: object, changes: {field, from, to, reason}[], blocked: string[]}}
 */
export function reconcile(choices, selection, changed) {
  const sel = { ...selection };
  const changes = [];
  const blocked = [];
  if (changed === "cache") {
    const policy = choices.find((c) => c.field === "cache_policy");
    if (policy) sel.cache_policy = preferredDefault(policy, sel);
  }
  for (const choice of reconcileOrder(choices)) {
    const field = choice.field;
    const shown = visibleOptions(choices, choice, sel);
    if (shown.length === 0) {
      // Nothing to choose (e.g. the policy of "no cache"): send the default, if any, and let
      // the server decide.
      const d = preferredDefault(choice, sel);
      if (d === undefined || d === null) delete sel[field];
      else sel[field] = d;
      continue;
    }
    const ok = (v) => shown.some((x) => x.option.value === v && x.enabled);
    if (ok(sel[field])) continue;
    const before = sel[field];
    const beforeState = shown.find((x) => x.option.value === before);
    const d = preferredDefault(choice, sel);
    const next = ok(d) ? d : shown.find((x) => x.enabled)?.option.value;
    if (next === undefined) {
      blocked.push(field);
      delete sel[field];
      continue;
    }
    sel[field] = next;
    if (before !== undefined && before !== next && changed !== undefined) {
      changes.push({
        field,
        from: before,
        to: next,
        reason:
          beforeState?.reason ||
          (field === "cache_policy" ? "each cache has its own policies" : "not offered with the other choices"),
      });
    }
  }
  return { selection: sel, changes, blocked };
}

/** Every field at its default, made valid. */
export function defaultSelection(choices) {
  const sel = {};
  for (const c of reconcileOrder(choices)) {
    const d = preferredDefault(c, sel);
    if (d !== undefined) sel[c.field] = d;
  }
  return reconcile(choices, sel).selection;
}

/**
 * The remembered choices (a JSON string from localStorage) laid over the defaults, keeping only
 * fields and values that still exist, then made valid.
 */
export function restoreSelection(choices, stored) {
  let saved = null;
  if (typeof stored === "string") {
    try {
      saved = JSON.parse(stored);
    } catch {
      saved = null;
    }
  } else if (stored && typeof stored === "object") {
    saved = stored;
  }
  const sel = defaultSelection(choices);
  if (saved && typeof saved === "object" && !Array.isArray(saved)) {
    for (const c of choices) {
      const v = saved[c.field];
      if (typeof v === "string" && c.options.some((o) => o.value === v)) sel[c.field] = v;
    }
  }
  return reconcile(choices, sel).selection;
}

/** The body of POST /api/sessions: one string per field chosen. */
export function launchBody(selection) {
  const body = {};
  for (const [k, v] of Object.entries(selection || {})) {
    if (typeof v === "string" && v !== "") body[k] = v;
  }
  return body;
}

/** [{field, label, value, valueLabel}] for a summary of a stack. */
export function describeStack(choices, stack) {
  const out = [];
  const seen = new Set();
  for (const c of orderChoices(choices)) {
    if (stack && typeof stack[c.field] === "string") {
      out.push({
        field: c.field,
        label: c.label,
        value: stack[c.field],
        valueLabel: labelOf(choices, c.field, stack[c.field]),
      });
      seen.add(c.field);
    }
  }
  for (const [k, v] of Object.entries(stack || {})) {
    if (!seen.has(k) && (typeof v === "string" || typeof v === "number" || typeof v === "boolean")) {
      out.push({ field: k, label: k.replace(/_/g, " "), value: String(v), valueLabel: String(v) });
    }
  }
  return out;
}
