import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseIpv4 } from "../../common/ipv4.js";
import type { EipBinding } from "../types.js";
import { AddressIndex } from "./address-index.js";
import { type PoolWorld, type Verdict, judge, usage } from "./allocator.js";
import { poolSet } from "./parse.js";
import type { EipPool, EipPoolSpec } from "./types.js";

const ip = (s: string) => parseIpv4(s) as number;

function pool(name: string, spec: EipPoolSpec, created = "2026-01-01T00:00:00Z"): EipPool {
  return { metadata: { name, creationTimestamp: created }, spec };
}

let clock = 0;
function binding(
  key: string,
  spec: { eipAddr?: string; poolName?: string } = {},
  extra: { statusEip?: string; deleting?: boolean; created?: string } = {},
): EipBinding {
  const [namespace, name] = key.split("/") as [string, string];
  clock++;
  return {
    metadata: {
      name,
      namespace,
      creationTimestamp:
        extra.created ?? `2026-01-01T00:00:${String(clock % 60).padStart(2, "0")}Z`,
      ...(extra.deleting ? { deletionTimestamp: "2026-01-02T00:00:00Z" } : {}),
    },
    spec: { vmiName: "vm", ...spec },
    ...(extra.statusEip ? { status: { eipAddr: extra.statusEip } } : {}),
  };
}

function world(
  pools: EipPool[],
  bindings: EipBinding[],
  opts: {
    labels?: Record<string, Record<string, string>>;
    reserved?: string[];
    inFlight?: Record<string, string>;
  } = {},
): PoolWorld {
  const index = AddressIndex.of(bindings);
  for (const [key, address] of Object.entries(opts.inFlight ?? {})) index.reserve(key, ip(address));
  return {
    pools: poolSet(pools),
    index,
    namespaceLabels: (ns) => opts.labels?.[ns] ?? {},
    reserved: new Set((opts.reserved ?? []).map(ip)),
  };
}

const allocate = (address: string, p = "public"): Verdict => ({
  kind: "allocate",
  pool: p,
  address,
});
const reasonOf = (v: Verdict) => (v.kind === "refuse" ? v.reason : v.kind);

const PUBLIC = pool("public", { addresses: ["192.168.18.0/29"], default: true });

describe("judge: no pool at all", () => {
  test("a binding naming an address goes on as before", () => {
    const b = binding("a/x", { eipAddr: "10.9.9.9" });
    assert.deepEqual(judge(b, world([], [b])), { kind: "proceed" });
  });
  test("a binding naming none is told there is no pool", () => {
    const b = binding("a/x");
    assert.equal(reasonOf(judge(b, world([], [b]))), "PoolNotFound");
  });
});

describe("judge: allocation", () => {
  test("the lowest free address, never the network address", () => {
    const b = binding("a/x");
    assert.deepEqual(judge(b, world([PUBLIC], [b])), allocate("192.168.18.1"));
  });
  test("addresses named, held in status or just allocated are skipped, as are node and gateway addresses", () => {
    const named = binding("a/named", { eipAddr: "192.168.18.1" });
    // Its spec moved it elsewhere; the agents still hold the old address until it is unbound.
    const held = binding("a/held", { eipAddr: "10.0.0.50" }, { statusEip: "192.168.18.2" });
    const b = binding("a/x");
    const w = world([PUBLIC], [named, held, b], {
      reserved: ["192.168.18.3", "192.168.18.5"],
      inFlight: { "a/other": "192.168.18.4" },
    });
    assert.deepEqual(judge(b, w), allocate("192.168.18.6"));
  });
  test("never the broadcast address: a full /29 is exhausted at six", () => {
    const holders = [1, 2, 3, 4, 5, 6].map((i) =>
      binding(`a/h${i}`, { eipAddr: `192.168.18.${i}` }),
    );
    const b = binding("a/x");
    const v = judge(b, world([PUBLIC], [...holders, b]));
    assert.equal(reasonOf(v), "PoolExhausted");
    assert.match((v as { message: string }).message, /no free address \(6 in all\)/);
  });
  test("oldest request first: with one address left, the older waiting binding gets it whoever asks first", () => {
    const holders = [1, 2, 3, 4, 5].map((i) => binding(`a/h${i}`, { eipAddr: `192.168.18.${i}` }));
    const older = binding("b/older", {}, { created: "2026-01-01T00:00:01Z" });
    const younger = binding("a/younger", {}, { created: "2026-01-01T00:00:02Z" });
    const w = world([PUBLIC], [...holders, younger, older]);
    assert.equal(reasonOf(judge(younger, w)), "PoolExhausted");
    assert.deepEqual(judge(older, w), allocate("192.168.18.6"));
  });
  test("two waiting bindings are given different addresses, in age order", () => {
    const first = binding("a/first", {}, { created: "2026-01-01T00:00:01Z" });
    const second = binding("a/second", {}, { created: "2026-01-01T00:00:02Z" });
    const w = world([PUBLIC], [second, first]);
    assert.deepEqual(judge(second, w), allocate("192.168.18.2"));
    assert.deepEqual(judge(first, w), allocate("192.168.18.1"));
  });
  test("an address is free again only once no binding names or holds it", () => {
    const deleting = binding("a/gone", { eipAddr: "192.168.18.1" }, { deleting: true });
    const b = binding("a/x");
    assert.deepEqual(judge(b, world([PUBLIC], [deleting, b])), allocate("192.168.18.2"));
    assert.deepEqual(judge(b, world([PUBLIC], [b])), allocate("192.168.18.1"));
  });
  test("a binding being deleted is not given an address", () => {
    const b = binding("a/x", {}, { deleting: true });
    assert.deepEqual(judge(b, world([PUBLIC], [b])), { kind: "proceed" });
  });
  test("poolName picks the pool; a missing or invalid one is reported", () => {
    const other = pool("other", { addresses: ["10.1.0.10-10.1.0.11"] });
    const bad = pool("bad", { addresses: ["10.2.0.9-10.2.0.1"] });
    const b = binding("a/x", { poolName: "other" });
    assert.deepEqual(judge(b, world([PUBLIC, other], [b])), allocate("10.1.0.10", "other"));
    const missing = binding("a/y", { poolName: "nope" });
    assert.match(
      (judge(missing, world([PUBLIC], [missing])) as { message: string }).message,
      /no EipPool nope/,
    );
    const invalid = binding("a/z", { poolName: "bad" });
    assert.match(
      (judge(invalid, world([PUBLIC, bad], [invalid])) as { message: string }).message,
      /bad is invalid: .*backwards/,
    );
  });
  test("with pools but no default, a binding naming nothing is told to name something", () => {
    const b = binding("a/x");
    const v = judge(b, world([pool("p", { addresses: ["10.0.0.0/24"] })], [b]));
    assert.equal(reasonOf(v), "PoolNotFound");
  });
  test("a pool that does not admit the namespace allocates nothing to it", () => {
    const fenced = pool("public", {
      addresses: ["192.168.18.0/29"],
      default: true,
      namespaces: ["a"],
    });
    const b = binding("b/x");
    assert.equal(reasonOf(judge(b, world([fenced], [b]))), "NotInPool");
    const byLabel = pool("public", {
      addresses: ["192.168.18.0/29"],
      default: true,
      namespaceSelector: { matchLabels: { tenant: "yes" } },
    });
    assert.deepEqual(
      judge(b, world([byLabel], [b], { labels: { b: { tenant: "yes" } } })),
      allocate("192.168.18.1"),
    );
  });
});

describe("judge: limits", () => {
  const LIMITED = pool("public", {
    addresses: ["192.168.18.0/29"],
    default: true,
    perNamespaceLimit: 2,
  });
  test("a namespace at its limit waits with QuotaExceeded; another namespace is served", () => {
    const held = [
      binding("a/h1", { eipAddr: "192.168.18.1" }),
      binding("a/h2", { eipAddr: "192.168.18.2" }),
    ];
    const a = binding("a/x");
    const b = binding("b/x");
    const w = world([LIMITED], [...held, a, b]);
    assert.equal(reasonOf(judge(a, w)), "QuotaExceeded");
    assert.deepEqual(judge(b, w), allocate("192.168.18.3"));
  });
  test("waiting bindings over their namespace's limit do not take addresses from the others", () => {
    const a1 = binding("a/1", {}, { created: "2026-01-01T00:00:01Z" });
    const a2 = binding("a/2", {}, { created: "2026-01-01T00:00:02Z" });
    const a3 = binding("a/3", {}, { created: "2026-01-01T00:00:03Z" });
    const b1 = binding("b/1", {}, { created: "2026-01-01T00:00:04Z" });
    const w = world([LIMITED], [a1, a2, a3, b1]);
    assert.deepEqual(judge(a2, w), allocate("192.168.18.2"));
    assert.equal(reasonOf(judge(a3, w)), "QuotaExceeded");
    assert.deepEqual(judge(b1, w), allocate("192.168.18.3"));
  });
  test("named addresses count too: the youngest over the limit is refused", () => {
    const n1 = binding("a/n1", { eipAddr: "192.168.18.1" }, { created: "2026-01-01T00:00:01Z" });
    const n2 = binding("a/n2", { eipAddr: "192.168.18.2" }, { created: "2026-01-01T00:00:02Z" });
    const n3 = binding("a/n3", { eipAddr: "192.168.18.3" }, { created: "2026-01-01T00:00:03Z" });
    const w = world([LIMITED], [n3, n1, n2]);
    assert.deepEqual(judge(n1, w), { kind: "proceed" });
    assert.deepEqual(judge(n2, w), { kind: "proceed" });
    assert.equal(reasonOf(judge(n3, w)), "QuotaExceeded");
  });
});

describe("judge: fences on named addresses", () => {
  const TEAM = pool("team-a", { addresses: ["192.168.18.0/29"], namespaces: ["a"] });
  test("an address in a pool admitting the namespace goes on", () => {
    const b = binding("a/x", { eipAddr: "192.168.18.3" });
    assert.deepEqual(judge(b, world([TEAM], [b])), { kind: "proceed" });
  });
  test("another namespace's pool address, or one in no pool, is NotInPool", () => {
    const squat = binding("b/x", { eipAddr: "192.168.18.3" });
    const v = judge(squat, world([TEAM], [squat]));
    assert.equal(reasonOf(v), "NotInPool");
    assert.match((v as { message: string }).message, /team-a, which does not admit namespace b/);
    const outside = binding("a/y", { eipAddr: "10.0.0.1" });
    assert.match(
      (judge(outside, world([TEAM], [outside])) as { message: string }).message,
      /in no EipPool/,
    );
  });
  test("a pool's network address and exclusions are not in it", () => {
    const ex = pool("p", { addresses: ["192.168.18.0/29"], exclude: ["192.168.18.4"] });
    for (const a of ["192.168.18.0", "192.168.18.7", "192.168.18.4"]) {
      const b = binding("a/x", { eipAddr: a });
      assert.equal(reasonOf(judge(b, world([ex], [b]))), "NotInPool", a);
    }
  });
  test("naming a pool and an address outside it is NotInPool", () => {
    const b = binding("a/x", { eipAddr: "10.1.0.10", poolName: "team-a" });
    const other = pool("other", { addresses: ["10.1.0.0/24"] });
    assert.equal(reasonOf(judge(b, world([TEAM, other], [b]))), "NotInPool");
  });
  test("an invalid pool fences but admits no one", () => {
    const bad = pool("bad", { addresses: ["192.168.18.9-192.168.18.1"] });
    const b = binding("a/x", { eipAddr: "192.168.18.3" });
    assert.equal(reasonOf(judge(b, world([bad], [b]))), "NotInPool");
  });
});

describe("usage and free addresses", () => {
  test("allocated counts held addresses; free leaves out held and reserved ones", () => {
    const set = poolSet([PUBLIC]);
    const p = set.valid[0];
    assert.ok(p);
    const w = world(
      [PUBLIC],
      [
        binding("a/1", { eipAddr: "192.168.18.1" }),
        binding("a/2", {}, { statusEip: "192.168.18.2" }),
        binding("a/3", { eipAddr: "10.0.0.1" }),
      ],
    );
    const reserved = new Set([ip("192.168.18.6")]);
    assert.deepEqual(usage(p, w.index, reserved), { allocated: 2, free: 3 });
    assert.deepEqual([...w.index.free(p, reserved)].length, 3);
  });
});
