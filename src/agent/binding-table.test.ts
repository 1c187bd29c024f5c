import { test } from "node:test";
import assert from "node:assert/strict";
import { BindingTable } from "./binding-table.js";

const bind = (eip: string, vmi: string) => ({ action: "bind" as const, binding: { eip, vmi } });
const unbind = (eip: string, vmi: string) => ({ action: "unbind" as const, binding: { eip, vmi } });
const T = "2026-01-01T00:00:00.000Z";

test("bind and unbind are idempotent", () => {
  const t = new BindingTable();
  assert.equal(t.apply(bind("1.1.1.1", "10.0.0.1"), T).kind, "changed");
  assert.equal(t.apply(bind("1.1.1.1", "10.0.0.1"), T).kind, "unchanged");
  assert.equal(t.version, 1);
  assert.equal(t.apply(unbind("1.1.1.1", "10.0.0.1"), T).kind, "changed");
  assert.equal(t.apply(unbind("1.1.1.1", "10.0.0.1"), T).kind, "unchanged");
  assert.equal(t.size, 0);
  assert.equal(t.version, 2);
});

test("one VMI per EIP and one EIP per VMI, compared exactly", () => {
  const t = new BindingTable();
  t.apply(bind("1.1.1.1", "10.0.0.1"), T);
  const a = t.apply(bind("1.1.1.1", "10.0.0.11"), T);
  assert.equal(a.kind, "conflict");
  if (a.kind === "conflict") assert.match(a.reason, /already bound to VMI 10\.0\.0\.1$/);
  const b = t.apply(bind("1.1.1.11", "10.0.0.1"), T);
  assert.equal(b.kind, "conflict");
  if (b.kind === "conflict")
    assert.match(b.reason, /VMI 10\.0\.0\.1 already holds EIP 1\.1\.1\.1$/);
  assert.equal(t.apply(bind("1.1.1.11", "10.0.0.11"), T).kind, "changed");
  const c = t.apply(unbind("1.1.1.1", "10.0.0.11"), T);
  assert.equal(c.kind, "conflict", "unbinding with the wrong VMI is refused");
  assert.deepEqual(
    t
      .list()
      .map((x) => [x.eip, x.vmi])
      .sort(),
    [
      ["1.1.1.1", "10.0.0.1"],
      ["1.1.1.11", "10.0.0.11"],
    ],
  );
});
