// The index of what the bindings hold: counts per address, releases reported once nothing
// refers to an address, allocations in flight until the cache shows them, the waiting
// bindings oldest first, and the free-address hint never skipping an address released.
import assert from "node:assert/strict";
import { test } from "node:test";
import { formatIpv4, parseIpv4 } from "../../common/ipv4.js";
import type { EipBinding } from "../types.js";
import { AddressIndex } from "./address-index.js";
import { poolSet } from "./parse.js";

const ip = (s: string) => parseIpv4(s) as number;
const ips = (xs: Iterable<number>) => [...xs].map(formatIpv4);

function binding(
  key: string,
  created: string,
  spec: { eipAddr?: string } = {},
  statusEip?: string,
): EipBinding {
  const [namespace, name] = key.split("/") as [string, string];
  return {
    metadata: { name, namespace, creationTimestamp: created },
    spec: { vmiName: name, ...spec },
    ...(statusEip ? { status: { eipAddr: statusEip } } : {}),
  };
}

const POOL = poolSet([
  {
    metadata: { name: "p", creationTimestamp: "2026-01-01T00:00:00Z" },
    spec: { addresses: ["10.0.0.0/29"], default: true },
  },
]).valid[0];

test("an address is released once neither spec, status nor an allocation in flight names it", () => {
  const index = new AddressIndex();
  const t = "2026-01-01T00:00:01Z";
  assert.deepEqual(index.update("a/x", binding("a/x", t, { eipAddr: "10.0.0.1" })), []);
  // Moved in spec; the agents still hold the old one (status).
  assert.deepEqual(index.update("a/x", binding("a/x", t, { eipAddr: "10.0.0.2" }, "10.0.0.1")), []);
  assert.deepEqual(ips(index.used()).sort(), ["10.0.0.1", "10.0.0.2"]);
  assert.deepEqual(
    ips(index.update("a/x", binding("a/x", t, { eipAddr: "10.0.0.2" }, "10.0.0.2"))),
    ["10.0.0.1"],
  );
  assert.deepEqual(ips(index.update("a/x", undefined)), ["10.0.0.2"]);
  assert.deepEqual([...index.used()], []);
});

test("an allocation in flight: in use and not waiting until the cache shows it, then the spec holds it", () => {
  const index = new AddressIndex();
  const x = binding("a/x", "2026-01-01T00:00:01Z");
  index.update("a/x", x);
  assert.equal(index.isWaiting("a/x"), true);
  index.reserve("a/x", ip("10.0.0.3"));
  assert.equal(index.isWaiting("a/x"), false);
  assert.equal(index.heldBy("a/x"), ip("10.0.0.3"));
  assert.deepEqual(index.holdersIn("a"), [x]);
  // The cache still lags: nothing changes.
  assert.deepEqual(index.update("a/x", { ...x, status: {} }), []);
  assert.equal(index.isUsed(ip("10.0.0.3")), true);
  // It shows the address: no release on the way from in flight to spec.
  assert.deepEqual(index.update("a/x", { ...x, spec: { ...x.spec, eipAddr: "10.0.0.3" } }), []);
  assert.equal(index.isUsed(ip("10.0.0.3")), true);
  // A failed write gives the address back and the binding waits again.
  const y = binding("a/y", "2026-01-01T00:00:02Z");
  index.update("a/y", y);
  index.reserve("a/y", ip("10.0.0.4"));
  assert.deepEqual(ips(index.unreserve("a/y")), ["10.0.0.4"]);
  assert.equal(index.isWaiting("a/y"), true);
});

test("the waiting bindings, oldest first, whatever order they came in; deleted and named ones are not", () => {
  const index = new AddressIndex();
  index.update("b/late", binding("b/late", "2026-01-01T00:00:03Z"));
  index.update("a/early", binding("a/early", "2026-01-01T00:00:01Z"));
  index.update("z/same", binding("z/same", "2026-01-01T00:00:02Z"));
  index.update("c/same", binding("c/same", "2026-01-01T00:00:02Z"));
  index.update("a/named", binding("a/named", "2026-01-01T00:00:00Z", { eipAddr: "10.0.0.1" }));
  const order = () => index.waiting.map((b) => `${b.metadata.namespace}/${b.metadata.name}`);
  assert.deepEqual(order(), ["a/early", "c/same", "z/same", "b/late"]);
  const deleting = binding("c/same", "2026-01-01T00:00:02Z");
  deleting.metadata.deletionTimestamp = "2026-01-02T00:00:00Z";
  index.update("c/same", deleting);
  index.update("b/late", undefined);
  assert.deepEqual(order(), ["a/early", "z/same"]);
});

test("free addresses: lowest first from the hint, and an address released below it is found again", () => {
  assert.ok(POOL);
  const index = new AddressIndex();
  const reserved = new Set([ip("10.0.0.2")]);
  const first = () => index.free(POOL, reserved).next().value;
  for (let i = 1; i <= 5; i++) {
    const a = first() as number;
    index.reserve(`a/b${i}`, a);
  }
  // .1, .3, .4, .5, .6 (.2 is reserved, .0 and .7 are not in the pool).
  assert.equal(first(), undefined);
  index.update("a/b2", binding("a/b2", "2026-01-01T00:00:01Z"));
  assert.deepEqual(ips(index.unreserve("a/b2")), ["10.0.0.3"]);
  assert.equal(formatIpv4(first() as number), "10.0.0.3");
  // Another reserved set voids the hint too.
  index.unreserve("a/b1");
  assert.equal(formatIpv4(index.free(POOL, new Set()).next().value as number), "10.0.0.1");
});
