// The pools' hook with fake caches: concurrent checks never hand out one address twice,
// refusals are told once in an Event, a freed address wakes the waiting bindings, and the
// pools' status is derived from the bindings.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";
import { pino } from "pino";
import type { CacheEvent, ObjectCache } from "../controller.js";
import type { EipBinding, KubeNode } from "../types.js";
import { PoolGate } from "./gate.js";
import type { EipPool, EipPoolStatus, Namespace } from "./types.js";

class FakeCache<T> implements ObjectCache<T> {
  readonly items = new Map<string, T>();
  readonly synced = true;
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
    for (const h of this.handlers)
      h({ type: old ? "modified" : "added", key, obj, ...(old ? { old } : {}) });
  }
  delete(key: string) {
    const obj = this.items.get(key);
    if (!obj) return;
    this.items.delete(key);
    for (const h of this.handlers) h({ type: "deleted", key, obj, old: obj });
  }
}

let pools: FakeCache<EipPool>;
let bindings: FakeCache<EipBinding>;
let nodes: FakeCache<KubeNode>;
let enqueued: string[];
let events: string[];
let allocations: { key: string; pool: string; address: string }[];
/** Set by a test to hold the allocation writes until it says so. */
let hold: Promise<void> | undefined;
let failNext: Error | undefined;
let statuses: Map<string, EipPoolStatus>;
let gate: PoolGate;

function binding(name: string, created: string, eipAddr?: string): EipBinding {
  return {
    metadata: { name, namespace: "a", creationTimestamp: created, resourceVersion: "1" },
    spec: { vmiName: name, ...(eipAddr ? { eipAddr } : {}) },
  };
}

beforeEach(() => {
  pools = new FakeCache();
  bindings = new FakeCache();
  nodes = new FakeCache();
  enqueued = [];
  events = [];
  allocations = [];
  hold = undefined;
  failNext = undefined;
  statuses = new Map();
  gate = new PoolGate({
    pools,
    namespaces: new FakeCache<Namespace>(),
    bindings,
    nodes,
    writer: {
      async allocate(b, pool, address) {
        await Promise.resolve(); // the API answers later; the cache later still
        const err = failNext;
        failNext = undefined;
        if (err) throw err;
        allocations.push({ key: `${b.metadata.namespace}/${b.metadata.name}`, pool, address });
        await hold;
        return { ...b, spec: { ...b.spec, eipAddr: address } };
      },
      async patchPoolStatus(p, status) {
        statuses.set(p.metadata.name, status);
      },
    },
    events: { record: (_b, type, reason) => events.push(`${type} ${reason}`) },
    enqueue: (key) => enqueued.push(key),
    reserved: ["10.0.0.1"],
    logger: pino({ level: "silent" }),
  });
  pools.set("p", {
    metadata: { name: "p", creationTimestamp: "2026-01-01T00:00:00Z", generation: 1 },
    spec: { addresses: ["10.0.0.0/29"], default: true },
  });
  nodes.set("n1", {
    metadata: { name: "n1" },
    status: { addresses: [{ type: "InternalIP", address: "10.0.0.2" }] },
  });
  enqueued = [];
});

afterEach(() => gate.stop());

describe("PoolGate", () => {
  test("concurrent checks of two waiting bindings give two addresses, skipping gateway and node", async () => {
    const x = binding("x", "2026-01-01T00:00:01Z");
    const y = binding("y", "2026-01-01T00:00:02Z");
    bindings.set("a/x", x);
    bindings.set("a/y", y);
    const [rx, ry] = await Promise.all([gate.check(y), gate.check(x)]);
    assert.deepEqual([rx.kind, ry.kind], ["allocated", "allocated"]);
    assert.deepEqual(allocations.map((a) => `${a.key}=${a.address}`).sort(), [
      "a/x=10.0.0.3",
      "a/y=10.0.0.4",
    ]);
    assert.deepEqual(events, ["Normal Allocated", "Normal Allocated"]);
  });

  test("an address just written counts as in use before the cache shows it", async () => {
    const x = binding("x", "2026-01-01T00:00:01Z");
    bindings.set("a/x", x);
    assert.equal((await gate.check(x)).kind, "allocated");
    // The cache still shows x without its address, and x is now being deleted: it waits for
    // nothing, but the address written to it is still its own until the cache says otherwise.
    bindings.set("a/x", {
      ...x,
      metadata: { ...x.metadata, deletionTimestamp: "2026-01-02T00:00:00Z" },
    });
    const y = binding("y", "2026-01-01T00:00:02Z");
    bindings.set("a/y", y);
    assert.equal((await gate.check(y)).kind, "allocated");
    assert.deepEqual(
      allocations.map((a) => `${a.key}=${a.address}`),
      ["a/x=10.0.0.3", "a/y=10.0.0.4"],
    );
  });

  test("a refusal is told in an Event once, not again while the status says it", async () => {
    const z = binding("z", "2026-01-01T00:00:01Z", "192.0.2.9");
    bindings.set("a/z", z);
    const r = await gate.check(z);
    assert.equal(r.kind === "refuse" && r.reason, "NotInPool");
    assert.deepEqual(events, ["Warning NotInPool"]);
    const told: EipBinding = {
      ...z,
      status: {
        conditions: [
          {
            type: "Ready",
            status: "False",
            lastTransitionTime: "2026-01-01T00:00:00Z",
            reason: r.kind === "refuse" ? r.reason : "",
            message: r.kind === "refuse" ? r.message : "",
          },
        ],
      },
    };
    bindings.set("a/z", told);
    await gate.check(told);
    assert.deepEqual(events, ["Warning NotInPool"]);
  });

  test("a binding going away wakes the bindings waiting for an address", () => {
    bindings.set("a/holder", binding("holder", "2026-01-01T00:00:01Z", "10.0.0.3"));
    bindings.set("a/waiting", binding("waiting", "2026-01-01T00:00:02Z"));
    enqueued = [];
    bindings.delete("a/holder");
    assert.deepEqual(enqueued, ["a/waiting"]);
  });

  test("a pool changing re-decides every binding", () => {
    bindings.set("a/one", binding("one", "2026-01-01T00:00:01Z", "10.0.0.3"));
    enqueued = [];
    pools.set("q", {
      metadata: { name: "q", creationTimestamp: "2026-01-02T00:00:00Z" },
      spec: { addresses: ["10.0.1.0/24"] },
    });
    assert.deepEqual(enqueued, ["a/one"]);
    enqueued = [];
    const q = pools.get("q") as EipPool;
    pools.set("q", { ...q, status: { allocated: 0, free: 254 } });
    assert.deepEqual(enqueued, [], "a status write (same generation) re-decides nothing");
  });

  test("pool status: allocated and free from the bindings; an overlapping pool is invalid", async () => {
    bindings.set("a/one", binding("one", "2026-01-01T00:00:01Z", "10.0.0.3"));
    pools.set("late", {
      metadata: { name: "late", creationTimestamp: "2026-01-02T00:00:00Z", generation: 1 },
      spec: { addresses: ["10.0.0.4-10.0.0.5"] },
    });
    await gate.writeStatuses();
    const p = statuses.get("p");
    // Hosts .1-.6: .3 held; .1 (gateway) and .2 (a node) never handed out.
    assert.equal(p?.allocated, 1);
    assert.equal(p?.free, 3);
    assert.equal(p?.conditions?.[0]?.status, "True");
    const late = statuses.get("late");
    assert.equal(late?.conditions?.[0]?.status, "False");
    assert.match(late?.conditions?.[0]?.message ?? "", /overlaps the older EipPool p/);
  });

  test("allocation writes run at once, not one after the other", async () => {
    let release = () => {};
    hold = new Promise((resolve) => (release = resolve));
    const x = binding("x", "2026-01-01T00:00:01Z");
    const y = binding("y", "2026-01-01T00:00:02Z");
    bindings.set("a/x", x);
    bindings.set("a/y", y);
    const checks = Promise.all([gate.check(x), gate.check(y)]);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(allocations.length, 2, "both writes are in flight together");
    release();
    const [rx, ry] = await checks;
    assert.equal(rx.kind === "allocated" && rx.binding.spec.eipAddr, "10.0.0.3");
    assert.equal(ry.kind === "allocated" && ry.binding.spec.eipAddr, "10.0.0.4");
  });

  test("only a release wakes the waiting bindings: an allocation or a status write wakes none", async () => {
    const x = binding("x", "2026-01-01T00:00:01Z");
    bindings.set("a/x", x);
    bindings.set("a/waiting", binding("waiting", "2026-01-01T00:00:02Z"));
    const r = await gate.check(x);
    assert.equal(r.kind, "allocated");
    enqueued = [];
    const allocated = { ...x, spec: { ...x.spec, eipAddr: "10.0.0.3" } };
    bindings.set("a/x", allocated);
    bindings.set("a/x", { ...allocated, status: { eipAddr: "10.0.0.3" } });
    assert.deepEqual(enqueued, []);
    // Moved to a named address: .3 is released once the status lets go of it too.
    bindings.set("a/x", {
      ...allocated,
      spec: { ...x.spec, eipAddr: "10.0.0.5" },
      status: { eipAddr: "10.0.0.3" },
    });
    assert.deepEqual(enqueued, []);
    bindings.set("a/x", {
      ...allocated,
      spec: { ...x.spec, eipAddr: "10.0.0.5" },
      status: { eipAddr: "10.0.0.5" },
    });
    assert.deepEqual(enqueued, ["a/waiting"]);
  });

  test("the cache event of an allocation written here is ours, once; the same change by another is not", async () => {
    const x = binding("x", "2026-01-01T00:00:01Z");
    bindings.set("a/x", x);
    const r = await gate.check(x);
    assert.ok(r.kind === "allocated");
    const ev = { type: "modified" as const, key: "a/x", obj: r.binding, old: x };
    assert.equal(gate.ownAllocation(ev), true);
    assert.equal(gate.ownAllocation(ev), false, "told once");
    const y = binding("y", "2026-01-01T00:00:02Z");
    bindings.set("a/y", y);
    const other = { ...y, spec: { ...y.spec, eipAddr: "10.0.0.6" } };
    assert.equal(gate.ownAllocation({ type: "modified", key: "a/y", obj: other, old: y }), false);
  });

  test("while the cache lags, a check answers with the object written; a failed write frees its address", async () => {
    const x = binding("x", "2026-01-01T00:00:01Z");
    bindings.set("a/x", x);
    const first = await gate.check(x);
    const again = await gate.check(x);
    assert.deepEqual(again, first, "no second allocation");
    assert.equal(allocations.length, 1);
    const y = binding("y", "2026-01-01T00:00:02Z");
    bindings.set("a/y", y);
    failNext = new Error("conflict");
    await assert.rejects(gate.check(y), /conflict/);
    const z = binding("z", "2026-01-01T00:00:03Z");
    bindings.set("a/z", z);
    const rz = await gate.check(z);
    // y waits again, older than z: z gets the address after the one kept for y.
    assert.equal(rz.kind === "allocated" && rz.binding.spec.eipAddr, "10.0.0.5");
    const ry = await gate.check(y);
    assert.equal(ry.kind === "allocated" && ry.binding.spec.eipAddr, "10.0.0.4");
  });
});
