// The vm-bindings controller with fake caches, queue and writer: which names its cache events
// enqueue, what a reconcile writes, and which Events it records on the VM or VMI.
import { beforeEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { CacheEvent, KeyQueue, ObjectCache } from "../controller.js";
import type { EipBinding, Vmi } from "../types.js";
import { VmBindings } from "./controller.js";
import { bindingFor } from "./plan.js";
import { EIP_ANNOTATION, type VirtualMachine } from "./types.js";

class FakeCache<T> implements ObjectCache<T> {
  readonly items = new Map<string, T>();
  synced = true;
  private readonly handlers: ((ev: CacheEvent<T>) => void)[] = [];
  get(key: string) {
    return this.items.get(key);
  }
  list() {
    return [...this.items.values()];
  }
  onEvent(handler: (ev: CacheEvent<T>) => void) {
    this.handlers.push(handler);
  }
  set(key: string, obj: T) {
    const old = this.items.get(key);
    this.items.set(key, obj);
    for (const h of this.handlers) {
      h({ type: old ? "modified" : "added", key, obj, ...(old ? { old } : {}) });
    }
  }
  delete(key: string) {
    const obj = this.items.get(key);
    if (!obj) return;
    this.items.delete(key);
    for (const h of this.handlers) h({ type: "deleted", key, obj, old: obj });
  }
}

class FakeQueue implements KeyQueue {
  added: string[] = [];
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

let vms: FakeCache<VirtualMachine>;
let vmis: FakeCache<Vmi>;
let bindings: FakeCache<EipBinding>;
let queue: FakeQueue;
let writes: string[];
let events: string[];
let controller: VmBindings;

function vm(name: string, annotation?: string, uid = `uid-${name}`): VirtualMachine {
  return {
    metadata: {
      name,
      namespace: "ns",
      uid,
      ...(annotation === undefined ? {} : { annotations: { [EIP_ANNOTATION]: annotation } }),
    },
    spec: { template: {} },
  };
}

beforeEach(() => {
  vms = new FakeCache();
  vmis = new FakeCache();
  bindings = new FakeCache();
  queue = new FakeQueue();
  writes = [];
  events = [];
  controller = new VmBindings({
    vms,
    vmis,
    bindings,
    queue,
    writer: {
      async create(b) {
        writes.push(`create ${b.metadata.namespace}/${b.metadata.name} ${b.spec.poolName ?? "-"}`);
      },
      async delete(b) {
        writes.push(`delete ${b.metadata.namespace}/${b.metadata.name} ${b.metadata.uid}`);
      },
    },
    events: {
      record: (obj, type, reason) =>
        events.push(`${obj.apiVersion} ${obj.kind} ${obj.metadata.name} ${type} ${reason}`),
    },
    logger: pino({ level: "silent" }),
  });
});

describe("vm-bindings controller", () => {
  test("a VM's annotation enqueues its name; its status and other changes do not", () => {
    vms.set("ns/web", vm("web"));
    assert.deepEqual(queue.added, ["ns/web"]);
    queue.added = [];
    vms.set("ns/web", { ...vm("web"), status: { printableStatus: "Running" } } as VirtualMachine);
    assert.deepEqual(queue.added, []);
    vms.set("ns/web", vm("web", "auto"));
    const t = vm("web", "auto");
    t.spec = { template: { metadata: { annotations: { [EIP_ANNOTATION]: "x" } } } };
    vms.set("ns/web", t);
    vms.delete("ns/web");
    assert.deepEqual(queue.added, ["ns/web", "ns/web", "ns/web"]);
  });

  test("a VMI's phase changes enqueue nothing; its annotation and owner do", () => {
    const v: Vmi = { metadata: { name: "solo", namespace: "ns", uid: "u" } };
    vmis.set("ns/solo", v);
    vmis.set("ns/solo", { ...v, status: { phase: "Running", nodeName: "node1" } });
    vmis.set("ns/solo", { metadata: { ...v.metadata, annotations: { [EIP_ANNOTATION]: "auto" } } });
    assert.deepEqual(queue.added, ["ns/solo", "ns/solo"]);
  });

  test("a binding's status writes enqueue nothing; a new one enqueues its name and its VMI's", () => {
    const b: EipBinding = {
      metadata: { name: "b", namespace: "ns", uid: "u" },
      spec: { vmiName: "web" },
    };
    bindings.set("ns/b", b);
    assert.deepEqual(queue.added, ["ns/b", "ns/web"]);
    queue.added = [];
    bindings.set("ns/b", { ...b, status: { eipAddr: "192.168.18.2" } });
    bindings.set("ns/b", { ...b, spec: { vmiName: "web", eipAddr: "192.168.18.2" } });
    assert.deepEqual(queue.added, []);
    bindings.set("ns/b", { ...b, spec: { vmiName: "db" } });
    assert.deepEqual(queue.added, ["ns/b", "ns/db", "ns/web"]);
  });

  test("reconcile creates, keeps, then deletes the VM's binding, with Events on the VM", async () => {
    vms.set("ns/web", vm("web", "public"));
    await controller.reconcile("ns/web");
    assert.deepEqual(writes, ["create ns/web public"]);
    assert.deepEqual(events, ["kubevirt.io/v1 VirtualMachine web Normal EipBindingCreated"]);
    const made = bindingFor({ kind: "VirtualMachine", object: vm("web") }, "public");
    made.metadata.uid = "b1";
    bindings.set("ns/web", made);
    await controller.reconcile("ns/web");
    assert.equal(writes.length, 1, "the binding is there: nothing more");
    vms.set("ns/web", vm("web"));
    await controller.reconcile("ns/web");
    assert.deepEqual(writes.slice(1), ["delete ns/web b1"]);
    assert.equal(events.at(-1), "kubevirt.io/v1 VirtualMachine web Normal EipBindingDeleted");
  });

  test("a user's binding for the VMI, found through the index, makes ours go", async () => {
    vms.set("ns/web", vm("web", "auto"));
    const made = bindingFor({ kind: "VirtualMachine", object: vm("web") }, undefined);
    made.metadata.uid = "b1";
    bindings.set("ns/web", made);
    bindings.set("ns/mine", {
      metadata: { name: "mine", namespace: "ns", uid: "m" },
      spec: { vmiName: "web" },
    });
    await controller.reconcile("ns/web");
    assert.deepEqual(writes, ["delete ns/web b1"]);
    bindings.delete("ns/web");
    await controller.reconcile("ns/web");
    assert.deepEqual(writes, ["delete ns/web b1"], "none is made while the user's exists");
    assert.equal(events.at(-1), "kubevirt.io/v1 VirtualMachine web Normal EipBindingByUser");
    // The user's goes: its deletion enqueues the VMI's name, and ours is made again.
    queue.added = [];
    bindings.delete("ns/mine");
    assert.ok(queue.added.includes("ns/web"));
    await controller.reconcile("ns/web");
    assert.equal(writes.at(-1), "create ns/web -");
  });

  test("an invalid annotation is a Warning on the VM and writes nothing", async () => {
    vms.set("ns/web", vm("web", "Not A Pool"));
    await controller.reconcile("ns/web");
    assert.deepEqual(writes, []);
    assert.deepEqual(events, ["kubevirt.io/v1 VirtualMachine web Warning InvalidEipAnnotation"]);
  });

  test("a failed create is a Warning on the VM, and the reconcile fails (to be retried)", async () => {
    const failing = new VmBindings({
      vms,
      vmis,
      bindings,
      queue,
      writer: {
        create: () => Promise.reject(new Error("403 Forbidden")),
        delete: () => Promise.resolve(),
      },
      events: {
        record: (obj, type, reason) => events.push(`${obj.metadata.name} ${type} ${reason}`),
      },
      logger: pino({ level: "silent" }),
    });
    vms.set("ns/web", vm("web", "auto"));
    await assert.rejects(failing.reconcile("ns/web"), /403 Forbidden/);
    assert.deepEqual(events, ["web Warning EipBindingFailed"]);
  });

  test("run waits for all three caches before acting, then plans every name", async () => {
    vms.synced = false;
    vms.set("ns/web", vm("web", "auto"));
    bindings.set("ns/old", {
      ...bindingFor({ kind: "VirtualMachine", object: vm("old") }, undefined),
      metadata: {
        ...bindingFor({ kind: "VirtualMachine", object: vm("old") }, undefined).metadata,
        uid: "o",
      },
    });
    queue.added = [];
    const running = controller.run();
    await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(queue.added, [], "nothing before the VMs' cache is synced");
    vms.synced = true;
    await running; // the fake queue's get() ends the workers at once
    assert.deepEqual(queue.added.sort(), ["ns/old", "ns/web"]);
  });
});
