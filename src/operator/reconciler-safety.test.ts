// The reconciler's safety rules against fake caches and agents: an EIP that must never be
// bound is refused before any agent call (and unbound once it becomes one), and a deletion
// finishes when there is nothing left to wait for (node gone, NotReady past the grace, the
// agent does not hold the pair).
import { beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import { RetryLater } from "./reconciler.js";
import { World, reconcilerOn } from "./test-world.js";
import { FINALIZER, SEED_FINALIZER } from "./types.js";

let w: World;

beforeEach(() => {
  w = new World();
  w.addNode("node1", "172.16.0.11");
  w.nodes.set("node2", {
    metadata: { name: "node2" },
    status: {
      addresses: [
        { type: "InternalIP", address: "172.16.0.12" },
        { type: "ExternalIP", address: "192.168.18.12" },
      ],
    },
  });
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
});

const agentCalls = () => w.calls.filter((c) => /^(bind|unbind|list) /.test(c));

test("a special EIP is refused before any agent call: InvalidEip and a Warning Event", async () => {
  const r = reconcilerOn(w);
  for (const [eip, what] of [
    ["0.0.0.0", "the unspecified address"],
    ["127.0.0.1", "a loopback address"],
    ["169.254.169.254", "a link-local address"],
    ["224.0.0.18", "a multicast address"],
    ["255.255.255.255", "the limited broadcast address"],
  ] as const) {
    w.addBinding(`b-${eip}`, eip, "vm", "t1");
    await r.reconcile(`default/b-${eip}`);
    const ready = w.ready(`b-${eip}`);
    assert.equal(ready?.status, "False", eip);
    assert.equal(ready?.reason, "InvalidEip", eip);
    assert.equal(ready?.message, `EIP ${eip} is ${what}`);
  }
  assert.deepEqual(agentCalls(), [], "no agent was called");
  assert.equal(w.events.filter((e) => e === "Warning InvalidEip").length, 5);
  // Once said, not said again at every pass.
  await r.reconcile("default/b-127.0.0.1");
  assert.equal(w.events.filter((e) => e === "Warning InvalidEip").length, 5);
});

test("a Node's InternalIP or ExternalIP, or the VMI's own address, is refused as the EIP", async () => {
  const r = reconcilerOn(w);
  w.addBinding("internal", "172.16.0.11", "vm", "t1");
  w.addBinding("external", "192.168.18.12", "vm", "t1");
  w.addBinding("own", "10.244.1.10", "vm", "t1");
  for (const name of ["internal", "external", "own"]) await r.reconcile(`default/${name}`);
  assert.equal(w.ready("internal")?.message, "EIP 172.16.0.11 is node node1's InternalIP");
  assert.equal(w.ready("external")?.message, "EIP 192.168.18.12 is node node2's ExternalIP");
  assert.equal(w.ready("own")?.message, "EIP 10.244.1.10 is the VMI's own address");
  for (const name of ["internal", "external", "own"])
    assert.equal(w.ready(name)?.reason, "InvalidEip");
  assert.deepEqual(agentCalls(), []);
});

test("a Node that gains a bound EIP as its address: the EIP is unbound and refused", async () => {
  const r = reconcilerOn(w);
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "Bound");
  w.nodes.get("node2")?.status?.addresses?.push({ type: "ExternalIP", address: "192.168.18.100" });
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "InvalidEip");
  assert.equal(w.ready("b")?.message, "EIP 192.168.18.100 is node node2's ExternalIP");
  assert.equal(w.bindings.get("default/b")?.status?.nodeName, undefined);
  assert.equal(w.agents.get("172.16.0.11")?.size, 0, "unbound");
  assert.ok(w.events.includes("Warning InvalidEip"));
});

test("deleting a binding whose node is deleted finishes: both finalizers go, no agent call", async () => {
  const r = reconcilerOn(w);
  w.addBinding("b", "192.168.18.100", "vm", "t1", [SEED_FINALIZER]);
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "Bound");
  w.nodes.delete("node1");
  w.calls.length = 0;
  w.deleteBinding("b");
  await r.reconcile("default/b");
  assert.equal(w.bindings.has("default/b"), false);
  assert.deepEqual(agentCalls(), []);
});

test("deleting a binding on a NotReady node waits out the grace period, then finishes", async () => {
  let now = new Date("2026-11-26T00:00:00Z");
  const r = reconcilerOn(w, { now: () => now, nodeNotReadyGraceMs: 5 * 60_000 });
  w.addBinding("b", "192.168.18.100", "vm", "t1", [SEED_FINALIZER]);
  await r.reconcile("default/b");
  const node1 = w.nodes.get("node1");
  assert.ok(node1?.status);
  node1.status.conditions = [
    { type: "Ready", status: "Unknown", lastTransitionTime: "2026-11-26T00:00:00Z" },
  ];
  w.down.add("172.16.0.11");
  w.deleteBinding("b");
  now = new Date("2026-11-26T00:04:59Z");
  await assert.rejects(r.reconcile("default/b"), RetryLater);
  assert.equal(w.ready("b")?.reason, "Unbinding");
  assert.deepEqual(w.bindings.get("default/b")?.metadata.finalizers, [SEED_FINALIZER, FINALIZER]);
  now = new Date("2026-11-26T00:05:00Z");
  await r.reconcile("default/b");
  assert.equal(w.bindings.has("default/b"), false, "both finalizers removed");
  assert.ok(w.events.includes("Warning NodeNotReady"));
});

test("an unreachable agent on a Ready node still holds the deletion back, however long", async () => {
  const r = reconcilerOn(w, {
    now: () => new Date("2027-01-01T00:00:00Z"),
    nodeNotReadyGraceMs: 1,
  });
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  const node1 = w.nodes.get("node1");
  assert.ok(node1?.status);
  node1.status.conditions = [
    { type: "Ready", status: "True", lastTransitionTime: "2026-01-01T00:00:00Z" },
  ];
  w.down.add("172.16.0.11");
  w.deleteBinding("b");
  await assert.rejects(r.reconcile("default/b"), RetryLater);
  assert.deepEqual(w.bindings.get("default/b")?.metadata.finalizers, [FINALIZER]);
});

test("deleting a binding whose agent refuses the unbind and does not hold the pair finishes", async () => {
  const r = reconcilerOn(w);
  w.addBinding("b", "192.168.18.100", "vm", "t1", [SEED_FINALIZER]);
  await r.reconcile("default/b");
  // The EIP was rebound on the node to another VMI by hand (eipctl): the agent refuses to
  // unbind our pair, and its list shows it does not hold it.
  w.agents.set("172.16.0.11", new Map([["192.168.18.100", "10.244.1.99"]]));
  w.deleteBinding("b");
  w.calls.length = 0;
  await r.reconcile("default/b");
  assert.deepEqual(agentCalls(), [
    "unbind 172.16.0.11 192.168.18.100 10.244.1.10",
    "list 172.16.0.11",
  ]);
  assert.equal(w.bindings.has("default/b"), false);
  assert.ok(w.events.includes("Warning NotHeld"));
  assert.equal(w.agents.get("172.16.0.11")?.get("192.168.18.100"), "10.244.1.99", "untouched");
});
