// The controller's triggers with fake caches and queue: what enqueues which EipBinding, and
// that its own status writes trigger nothing.
import { beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { AgentPool } from "./agents.js";
import { type CacheEvent, Controller, type KeyQueue, type ObjectCache } from "./controller.js";
import { OperatorMetrics } from "./metrics.js";
import type { EipBinding, KubeNode, Vmi } from "./types.js";

class FakeCache<T> implements ObjectCache<T> {
  readonly items = new Map<string, T>();
  synced = true;
  private handler: ((ev: CacheEvent<T>) => void) | undefined;
  get(key: string) {
    return this.items.get(key);
  }
  list() {
    return [...this.items.values()];
  }
  onEvent(handler: (ev: CacheEvent<T>) => void) {
    this.handler = handler;
  }
  set(key: string, obj: T) {
    const old = this.items.get(key);
    this.items.set(key, obj);
    this.handler?.({ type: old ? "modified" : "added", key, obj, ...(old ? { old } : {}) });
  }
  delete(key: string) {
    const obj = this.items.get(key);
    if (!obj) return;
    this.items.delete(key);
    this.handler?.({ type: "deleted", key, obj, old: obj });
  }
}

class FakeQueue implements KeyQueue {
  readonly added: string[] = [];
  add(key: string) {
    this.added.push(key);
  }
  addRateLimited() {}
  forget() {}
  async get() {
    return undefined;
  }
  done() {}
  get length() {
    return this.added.length;
  }
}

let bindings: FakeCache<EipBinding>;
let vmis: FakeCache<Vmi>;
let nodes: FakeCache<KubeNode>;
let queue: FakeQueue;

function binding(name: string, eip: string, vmi: string, generation = 1): EipBinding {
  return {
    metadata: { name, namespace: "default", generation, creationTimestamp: name },
    spec: { eipAddr: eip, vmiName: vmi },
  };
}

function vmi(name: string, node: string, address: string, phase = "Running"): Vmi {
  return {
    metadata: { name, namespace: "default" },
    status: { phase, nodeName: node, interfaces: [{ ipAddress: address }] },
  };
}

beforeEach(() => {
  bindings = new FakeCache();
  vmis = new FakeCache();
  nodes = new FakeCache();
  queue = new FakeQueue();
  new Controller({
    bindings,
    vmis,
    nodes,
    queue,
    agents: {} as AgentPool,
    writer: { patchStatus: async () => {}, setFinalizers: async () => {} },
    events: { record: () => {} },
    metrics: new OperatorMetrics(),
    logger: pino({ level: "silent" }),
    workers: 1,
    antiEntropyMs: 60_000,
    nodeNotReadyGraceMs: 300_000,
  });
});

test("a new or edited EipBinding is queued; a status-only update is not", () => {
  const b = binding("a", "192.168.18.100", "vm");
  bindings.set("default/a", b);
  assert.deepEqual(queue.added, ["default/a"]);
  bindings.set("default/a", { ...b, status: { nodeName: "node1" } });
  assert.deepEqual(queue.added, ["default/a"], "our own status write triggers nothing");
  bindings.set("default/a", {
    ...b,
    metadata: { ...b.metadata, finalizers: ["extension.lucheng0127/eip-binding"] },
  });
  assert.deepEqual(queue.added, ["default/a"], "nor does our finalizer being added");
  bindings.set("default/a", { ...binding("a", "192.168.18.101", "vm", 2) });
  assert.deepEqual(queue.added, ["default/a", "default/a"]);
});

test("a VMI change queues the bindings naming it, only when its placement changed", () => {
  bindings.set("default/a", binding("a", "192.168.18.100", "vm"));
  bindings.set("default/b", binding("b", "192.168.18.101", "other"));
  queue.added.length = 0;
  vmis.set("default/vm", vmi("vm", "node1", "10.244.1.10"));
  assert.deepEqual(queue.added, ["default/a"]);
  const same = vmi("vm", "node1", "10.244.1.10");
  same.metadata.resourceVersion = "2";
  vmis.set("default/vm", same);
  assert.deepEqual(queue.added, ["default/a"], "nothing relevant changed");
  vmis.set("default/vm", vmi("vm", "node2", "10.244.2.10"));
  assert.deepEqual(queue.added, ["default/a", "default/a"]);
});

test("deleting an EIP's binding queues the others naming the EIP", () => {
  bindings.set("default/a", binding("a", "192.168.18.100", "vm1"));
  bindings.set("default/b", binding("b", "192.168.18.100", "vm2"));
  bindings.set("default/c", binding("c", "192.168.18.200", "vm3"));
  queue.added.length = 0;
  bindings.delete("default/a");
  assert.deepEqual(queue.added, ["default/b"]);
});

test("a node whose address changes queues the bindings on it", () => {
  bindings.set("default/a", binding("a", "192.168.18.100", "vm"));
  vmis.set("default/vm", vmi("vm", "node1", "10.244.1.10"));
  queue.added.length = 0;
  const node = (address: string): KubeNode => ({
    metadata: { name: "node1" },
    status: { addresses: [{ type: "InternalIP", address }] },
  });
  nodes.set("node1", node("172.16.0.11"));
  assert.deepEqual(queue.added, ["default/a"]);
  nodes.set("node1", node("172.16.0.11"));
  assert.deepEqual(queue.added, ["default/a"], "a heartbeat changes nothing");
  nodes.set("node1", node("172.16.0.21"));
  assert.deepEqual(queue.added, ["default/a", "default/a"]);
});

test("a node gaining or losing a binding's EIP as its address queues that binding", () => {
  bindings.set("default/a", binding("a", "192.168.18.100", "vm"));
  bindings.set("default/b", binding("b", "192.168.18.101", "vm2"));
  queue.added.length = 0;
  const node = (...external: string[]): KubeNode => ({
    metadata: { name: "node2" },
    status: {
      addresses: [
        { type: "InternalIP", address: "172.16.0.12" },
        ...external.map((address) => ({ type: "ExternalIP", address })),
      ],
    },
  });
  nodes.set("node2", node());
  assert.deepEqual(queue.added, []);
  nodes.set("node2", node("192.168.18.100"));
  assert.deepEqual(queue.added, ["default/a"]);
  nodes.set("node2", node("192.168.18.100"));
  assert.deepEqual(queue.added, ["default/a"], "a heartbeat changes nothing");
  nodes.set("node2", node());
  assert.deepEqual(queue.added, ["default/a", "default/a"], "losing it may bind it again");
});
