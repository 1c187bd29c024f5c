// The reconciler against fake caches, agents and API writes: the order of agent calls on a
// move, what the status says after each outcome, finalizers, conflicts and failures.
import { beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import { type Reconciler, RetryLater } from "./reconciler.js";
import { World, reconcilerOn } from "./test-world.js";
import { FINALIZER, SEED_FINALIZER } from "./types.js";

let w: World;
let r: Reconciler;

beforeEach(() => {
  w = new World();
  w.addNode("node1", "172.16.0.11");
  w.addNode("node2", "172.16.0.12");
  r = reconcilerOn(w);
});

test("a Running VMI: finalizer first, bind on its node, status Ready/Bound", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  const b = w.bindings.get("default/b");
  assert.deepEqual(b?.metadata.finalizers, [FINALIZER]);
  assert.deepEqual(w.calls, [
    "bind 172.16.0.11 192.168.18.100 10.244.1.10",
    "status default/b Bound",
  ]);
  assert.equal(b?.status?.nodeName, "node1");
  assert.equal(b?.status?.vmiAddress, "10.244.1.10");
  assert.equal(w.ready("b")?.status, "True");
  assert.equal(b?.status?.observedGeneration, 1);
  w.calls.length = 0;
  await r.reconcile("default/b");
  assert.deepEqual(
    w.calls,
    ["bind 172.16.0.11 192.168.18.100 10.244.1.10"],
    "idempotent, no status write",
  );
});

test("a move binds on the new node first, then unbinds on the old one", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  w.calls.length = 0;
  w.setVmi("vm", "Running", "node2", "10.244.2.10");
  await r.reconcile("default/b");
  assert.deepEqual(w.calls, [
    "bind 172.16.0.12 192.168.18.100 10.244.2.10",
    "unbind 172.16.0.11 192.168.18.100 10.244.1.10",
    "status default/b Bound",
  ]);
  assert.equal(w.bindings.get("default/b")?.status?.nodeName, "node2");
  assert.ok(w.events.includes("Normal Moved"));
});

test("a move away from an unreachable node does not wait for it", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  w.down.add("172.16.0.11");
  w.setVmi("vm", "Running", "node2", "10.244.2.10");
  await r.reconcile("default/b");
  assert.equal(w.bindings.get("default/b")?.status?.nodeName, "node2");
  assert.equal(w.ready("b")?.status, "True");
  assert.ok(w.events.includes("Warning UnbindFailed"));
});

test("on the same node a new VMI address is unbound first, then bound", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  w.calls.length = 0;
  w.setVmi("vm", "Running", "node1", "10.244.1.11");
  await r.reconcile("default/b");
  assert.deepEqual(w.calls, [
    "unbind 172.16.0.11 192.168.18.100 10.244.1.10",
    "bind 172.16.0.11 192.168.18.100 10.244.1.11",
    "status default/b Bound",
  ]);
});

test("a VMI that stops is unbound everywhere and the status says why", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  w.setVmi("vm", "Succeeded", "node1", "10.244.1.10");
  await r.reconcile("default/b");
  assert.equal(w.agents.get("172.16.0.11")?.size, 0);
  const b = w.bindings.get("default/b");
  assert.equal(b?.status?.nodeName, undefined);
  assert.equal(w.ready("b")?.status, "False");
  assert.equal(w.ready("b")?.reason, "VMINotRunning");
  w.vmis.clear();
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "VMINotFound");
});

test("an unreachable agent: AgentUnavailable, and the key is retried", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  w.down.add("172.16.0.11");
  await assert.rejects(r.reconcile("default/b"), RetryLater);
  assert.equal(w.ready("b")?.reason, "AgentUnavailable");
  assert.equal(w.bindings.get("default/b")?.status?.nodeName, undefined);
  w.down.clear();
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "Bound");
});

test("two bindings for one EIP: the older holds it; the newer takes over when it goes", async () => {
  w.setVmi("vm1", "Running", "node1", "10.244.1.10");
  w.setVmi("vm2", "Running", "node2", "10.244.2.10");
  w.addBinding("old", "192.168.18.100", "vm1", "t1");
  w.addBinding("new", "192.168.18.100", "vm2", "t2");
  await r.reconcile("default/new");
  await r.reconcile("default/old");
  assert.equal(w.ready("new")?.reason, "EipConflict");
  assert.match(w.ready("new")?.message ?? "", /held by the older EipBinding default\/old/);
  assert.equal(w.ready("old")?.reason, "Bound");
  w.deleteBinding("old");
  await r.reconcile("default/new");
  assert.equal(w.ready("new")?.reason, "EipConflict", "the deleting owner keeps it until gone");
  await r.reconcile("default/old");
  assert.equal(w.bindings.has("default/old"), false, "unbound, finalizer removed, gone");
  await r.reconcile("default/new");
  assert.equal(w.ready("new")?.reason, "Bound");
  assert.equal(w.agents.get("172.16.0.11")?.size, 0);
  assert.equal(w.agents.get("172.16.0.12")?.get("192.168.18.100"), "10.244.2.10");
});

test("deletion waits, visibly, for an unreachable agent", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  w.down.add("172.16.0.11");
  w.deleteBinding("b");
  await assert.rejects(r.reconcile("default/b"), RetryLater);
  assert.equal(w.ready("b")?.reason, "Unbinding");
  assert.deepEqual(w.bindings.get("default/b")?.metadata.finalizers, [FINALIZER]);
  w.down.clear();
  await r.reconcile("default/b");
  assert.equal(w.bindings.has("default/b"), false);
  assert.equal(w.agents.get("172.16.0.11")?.size, 0);
});

test("a seed-made binding (its finalizer, no status) is adopted without an unbind, and deleted cleanly", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.agents.set("172.16.0.11", new Map([["192.168.18.100", "10.244.1.10"]])); // the seed's agent state
  w.addBinding("b", "192.168.18.100", "vm", "t1", [SEED_FINALIZER]);
  await r.reconcile("default/b");
  assert.ok(!w.calls.some((c) => c.startsWith("unbind")));
  assert.deepEqual(w.bindings.get("default/b")?.metadata.finalizers, [SEED_FINALIZER, FINALIZER]);
  assert.equal(w.ready("b")?.reason, "Bound");
  w.deleteBinding("b");
  await r.reconcile("default/b");
  assert.equal(w.bindings.has("default/b"), false, "both finalizers removed");
  assert.equal(w.agents.get("172.16.0.11")?.size, 0);
});

test("a node without an InternalIP, or a VMI without an address, is not placed", async () => {
  w.nodes.set("node3", { metadata: { name: "node3" }, status: { addresses: [] } });
  w.setVmi("vm", "Running", "node3", "10.244.3.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "NodeNoAddress");
  w.setVmi("vm", "Running", "node1");
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "VMINoAddress");
});

test("a VMI on a node that does not exist: NodeNotFound, no agent called, the status holds nothing", async () => {
  w.setVmi("vm", "Running", "node9", "10.244.9.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.status, "False");
  assert.equal(w.ready("b")?.reason, "NodeNotFound");
  assert.equal(w.ready("b")?.message, "node node9 does not exist");
  assert.deepEqual(w.calls, ["status default/b NodeNotFound"], "no agent was called");
  // Bound on node 1, then its node is gone from the API (the VMI's status still names it).
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "Bound");
  w.calls.length = 0;
  w.nodes.delete("node1");
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "NodeNotFound");
  assert.equal(w.bindings.get("default/b")?.status?.nodeName, undefined);
  // The node is gone, and with it its agent: nobody to call, the status drops the EIP.
  assert.deepEqual(w.calls, ["status default/b NodeNotFound"]);
});

test("an agent that refuses the bind: AgentRefused with the agent's reason, retried, nothing applied", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("b", "192.168.18.100", "vm", "t1");
  // Node 1's agent already binds the EIP to another VMI (made by hand with eipctl).
  w.agents.set("172.16.0.11", new Map([["192.168.18.100", "10.244.1.99"]]));
  await assert.rejects(r.reconcile("default/b"), RetryLater);
  const ready = w.ready("b");
  assert.equal(ready?.status, "False");
  assert.equal(ready?.reason, "AgentRefused");
  assert.match(ready?.message ?? "", /EIP 192\.168\.18\.100 is already bound$/);
  assert.equal(w.bindings.get("default/b")?.status?.nodeName, undefined);
  assert.deepEqual(w.events, ["Warning AgentRefused"]);
  assert.equal(w.agents.get("172.16.0.11")?.get("192.168.18.100"), "10.244.1.99", "untouched");
  w.agents.get("172.16.0.11")?.delete("192.168.18.100");
  await r.reconcile("default/b");
  assert.equal(w.ready("b")?.reason, "Bound");
});

test("two bindings for one EIP created in the same second: namespace/name decides, whatever the order", async () => {
  const second = "2026-11-26T00:00:00Z";
  for (const order of [
    ["a", "b"],
    ["b", "a"],
  ] as const) {
    for (const reconcileFirst of order) {
      w = new World();
      w.addNode("node1", "172.16.0.11");
      w.addNode("node2", "172.16.0.12");
      r = reconcilerOn(w);
      w.setVmi("vm1", "Running", "node1", "10.244.1.10");
      w.setVmi("vm2", "Running", "node2", "10.244.2.10");
      // Added in `order` (the caches' order), reconciled starting with `reconcileFirst`.
      for (const name of order)
        w.addBinding(name, "192.168.18.100", name === "a" ? "vm1" : "vm2", second);
      await r.reconcile(`default/${reconcileFirst}`);
      await r.reconcile(`default/${reconcileFirst === "a" ? "b" : "a"}`);
      const where = `added ${order.join(",")}, reconciled ${reconcileFirst} first`;
      assert.equal(w.ready("a")?.reason, "Bound", where);
      assert.equal(w.ready("b")?.reason, "EipConflict", where);
      assert.match(w.ready("b")?.message ?? "", /held by the older EipBinding default\/a$/, where);
      assert.equal(w.agents.get("172.16.0.12")?.size ?? 0, 0, where);
    }
  }
});

test("an allocated address: one pass binds it and writes the status, the finalizer came with the address", async () => {
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("b", "", "vm", "t1");
  const cached = w.bindings.get("default/b");
  assert.ok(cached);
  delete cached.spec.eipAddr;
  // The object the allocation's patch returned; the cache has not seen it yet.
  const written = {
    ...cached,
    metadata: { ...cached.metadata, finalizers: [FINALIZER] },
    spec: { ...cached.spec, eipAddr: "192.168.18.7" },
  };
  let finalizerWrites = 0;
  const setFinalizers = w.setFinalizers.bind(w);
  w.setFinalizers = async (b, f) => {
    finalizerWrites++;
    return setFinalizers(b, f);
  };
  r = reconcilerOn(w, {
    pools: {
      check: async () => ({ kind: "allocated", binding: written }),
      ownAllocation: () => false,
    },
  });
  await r.reconcile("default/b");
  assert.deepEqual(w.calls, [
    "bind 172.16.0.11 192.168.18.7 10.244.1.10",
    "status default/b Bound",
  ]);
  assert.equal(finalizerWrites, 0);
  assert.equal(w.bindings.get("default/b")?.status?.eipAddr, "192.168.18.7");
});
