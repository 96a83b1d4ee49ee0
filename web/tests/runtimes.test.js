import { test } from "node:test";
import assert from "node:assert/strict";
import { normalizeChoices } from "../js/lib/choices.js";
import { runtimeOptions, runtimeOfPool, runtimeOfMember, runtimeLabel } from "../js/lib/runtimes.js";

// Shaped like GET /api/options with two runtimes found under backends/.
const choices = normalizeChoices({
  choices: [
    { field: "runtime", label: "Runtime", default: "rust", options: [
      { value: "rust", label: "Rust (hyper)", description: "A Rust service.", available: true },
      { value: "python", label: "Python (Flask)", description: "A Python service.", available: true },
      { value: "node", label: "Node (Express)", available: false, reason: "node is not installed" },
      { value: "node-bun", label: "Node on Bun", available: true },
    ] },
    { field: "protocol", label: "Protocol", options: [{ value: "rest" }] },
  ],
});

test("runtimeOptions lists the runtime choice's options, none without one", () => {
  assert.deepEqual(runtimeOptions(choices).map((o) => o.value), ["rust", "python", "node", "node-bun"]);
  assert.deepEqual(runtimeOptions([]), []);
  assert.deepEqual(runtimeOptions(null), []);
  assert.deepEqual(runtimeOptions([{ field: "runtime", options: [{ value: "" }, null, { label: "x" }] }]), []);
});

test("a pool is the runtime of its name; control's pool is none", () => {
  assert.equal(runtimeOfPool(choices, "python").label, "Python (Flask)");
  assert.equal(runtimeOfPool(choices, "rust").label, "Rust (hyper)");
  assert.equal(runtimeOfPool(choices, "control"), null);
  assert.equal(runtimeOfPool([], "rust"), null);
});

test("an instance id names its runtime by its pool's prefix", () => {
  assert.equal(runtimeOfMember(choices, "python-14767").value, "python");
  assert.equal(runtimeOfMember(choices, "rust-41").value, "rust");
  assert.equal(runtimeOfMember(choices, "rust-c2").value, "rust"); // a container instance
  // An unavailable runtime is still the one a member of its pool belongs to.
  assert.equal(runtimeOfMember(choices, "node-12").value, "node");
  // The longest name wins.
  assert.equal(runtimeOfMember(choices, "node-bun-7").value, "node-bun");
});

test("ids that are no runtime's instance have none", () => {
  for (const id of ["control-40269", "python", "python-", "pythonic-1", "", null, undefined, 42]) {
    assert.equal(runtimeOfMember(choices, id), null, String(id));
  }
  assert.equal(runtimeOfMember([], "rust-1"), null);
});

test("runtimeLabel reads the label, else the name, else nothing", () => {
  assert.equal(runtimeLabel(runtimeOfPool(choices, "python")), "Python (Flask)");
  assert.equal(runtimeLabel({ value: "ruby" }), "ruby");
  assert.equal(runtimeLabel(null), "");
});
