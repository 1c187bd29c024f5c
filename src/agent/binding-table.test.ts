import { test } from "node:test";
import assert from "node:assert/strict";
import type { Binding } from "../model/desired.js";
import { plan } from "../model/plan.js";
import { TEST_PLAN_CONFIG } from "../model/test-plan-config.js";
import { BindingTable } from "./binding-table.js";

const bind = (eip: string, vmi: string) => ({ action: "bind" as const, binding: { eip, vmi } });
const unbind = (eip: string, vmi: string) => ({ action: "unbind" as const, binding: { eip, vmi } });
const T = "2026-01-01T00:00:00.000Z";

/** Proposes and, as a successful save would, commits. */
function saved(t: BindingTable, op: Parameters<BindingTable["propose"]>[0]) {
  const outcome = t.propose(op, T);
  t.commit(t.takeStaged().changes);
  return outcome;
}

const pairs = (t: BindingTable) =>
  t
    .list()
    .map((x) => [x.eip, x.vmi])
    .sort();

test("bind and unbind are idempotent", () => {
  const t = new BindingTable();
  assert.equal(saved(t, bind("1.1.1.1", "10.0.0.1")).kind, "changed");
  assert.equal(saved(t, bind("1.1.1.1", "10.0.0.1")).kind, "unchanged");
  assert.equal(t.version, 1);
  assert.equal(saved(t, unbind("1.1.1.1", "10.0.0.1")).kind, "changed");
  assert.equal(saved(t, unbind("1.1.1.1", "10.0.0.1")).kind, "unchanged");
  assert.equal(t.size, 0);
  assert.equal(t.version, 2);
});

test("one VMI per EIP and one EIP per VMI, compared exactly", () => {
  const t = new BindingTable();
  saved(t, bind("1.1.1.1", "10.0.0.1"));
  const a = saved(t, bind("1.1.1.1", "10.0.0.11"));
  assert.equal(a.kind, "conflict");
  if (a.kind === "conflict") assert.match(a.reason, /already bound to VMI 10\.0\.0\.1$/);
  const b = saved(t, bind("1.1.1.11", "10.0.0.1"));
  assert.equal(b.kind, "conflict");
  if (b.kind === "conflict")
    assert.match(b.reason, /VMI 10\.0\.0\.1 already holds EIP 1\.1\.1\.1$/);
  assert.equal(saved(t, bind("1.1.1.11", "10.0.0.11")).kind, "changed");
  const c = saved(t, unbind("1.1.1.1", "10.0.0.11"));
  assert.equal(c.kind, "conflict", "unbinding with the wrong VMI is refused");
  assert.deepEqual(pairs(t), [
    ["1.1.1.1", "10.0.0.1"],
    ["1.1.1.11", "10.0.0.11"],
  ]);
});

test("a proposed change is checked against the others proposed, but held only once committed", () => {
  const t = new BindingTable([{ eip: "1.1.1.1", vmi: "10.0.0.1", since: T }]);
  assert.equal(t.propose(unbind("1.1.1.1", "10.0.0.1"), T).kind, "changed");
  assert.equal(t.propose(bind("1.1.1.2", "10.0.0.2"), T).kind, "changed");
  const taken = t.takeStaged();
  // Proposed while the first two are being saved: sees them.
  assert.equal(t.propose(bind("1.1.1.1", "10.0.0.9"), T).kind, "changed");
  assert.equal(t.propose(bind("1.1.1.3", "10.0.0.2"), T).kind, "conflict");
  assert.deepEqual(pairs(t), [["1.1.1.1", "10.0.0.1"]], "nothing held changed before the save");
  assert.deepEqual(
    taken.after.map((b) => [b.eip, b.vmi]),
    [["1.1.1.2", "10.0.0.2"]],
    "what the save writes: the taken changes only",
  );
  t.commit(taken.changes);
  assert.deepEqual(pairs(t), [["1.1.1.2", "10.0.0.2"]]);
  t.commit(t.takeStaged().changes);
  assert.deepEqual(pairs(t), [
    ["1.1.1.1", "10.0.0.9"],
    ["1.1.1.2", "10.0.0.2"],
  ]);
});

test("a failed save drops every change not committed, taken or still staged", () => {
  const t = new BindingTable([{ eip: "1.1.1.1", vmi: "10.0.0.1", since: T }]);
  t.propose(unbind("1.1.1.1", "10.0.0.1"), T);
  t.takeStaged();
  t.propose(bind("1.1.1.1", "10.0.0.9"), T);
  t.discard();
  assert.deepEqual(pairs(t), [["1.1.1.1", "10.0.0.1"]]);
  assert.equal(t.version, 0);
  assert.equal(t.takeStaged().changes.length, 0);
  // Checked against the held table again.
  assert.equal(t.propose(bind("1.1.1.1", "10.0.0.9"), T).kind, "conflict");
  assert.equal(t.propose(bind("1.1.1.1", "10.0.0.1"), T).kind, "unchanged");
});

test("a held binding is pending until an apply of its version is confirmed", () => {
  const t = new BindingTable([{ eip: "1.1.1.1", vmi: "10.0.0.1", since: T }]);
  assert.equal(t.isPending("1.1.1.1"), true, "restored, not yet applied");
  t.confirm(t.version);
  assert.equal(t.isPending("1.1.1.1"), false);
  saved(t, bind("1.1.1.2", "10.0.0.2"));
  assert.equal(t.isPending("1.1.1.2"), true);
  assert.equal(t.isPending("1.1.1.1"), false);
  t.confirm(t.version);
  assert.equal(t.isPending("1.1.1.2"), false);
  assert.equal(t.isPending("9.9.9.9"), false, "not held: not pending");
});

// Replays the same operations reversed, duplicated and interleaved: the end state, and so
// the plan, must not depend on the order.
test("the plan depends only on the resulting bindings, not on the order of operations", () => {
  const pairs: Binding[] = Array.from({ length: 20 }, (_, i) => ({
    eip: `192.168.18.${100 + i}`,
    vmi: `10.244.1.${10 + i}`,
  }));
  const ops = [
    ...pairs.map((binding) => ({ action: "bind" as const, binding })),
    ...pairs
      .filter((_, i) => i % 3 === 0)
      .map((binding) => ({ action: "unbind" as const, binding })),
  ];
  const orders = [
    ops,
    [...ops.slice(0, 20).reverse(), ...ops.slice(20).reverse()],
    ops.flatMap((op) => [op, op]),
    [
      ...ops.slice(0, 20).filter((_, i) => i % 2),
      ...ops.slice(0, 20).filter((_, i) => !(i % 2)),
      ...ops.slice(20),
    ],
  ];
  const results = orders.map((order) => {
    const t = new BindingTable();
    for (const op of order) t.propose(op, "T");
    t.commit(t.takeStaged().changes);
    return plan(TEST_PLAN_CONFIG, t.list());
  });
  for (const r of results.slice(1)) assert.deepEqual(r, results[0]);
  assert.equal(results[0]?.ruleSources.length, 13);
});
