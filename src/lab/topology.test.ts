import assert from "node:assert/strict";
import { test } from "node:test";
import { resolveIptablesModes } from "./lab.js";
import {
  Addressing,
  buildPlan,
  checkPrefix,
  checkVmiName,
  nodeIptablesInput,
  SEED_TOPOLOGY,
  vmiHostVeth,
} from "./topology.js";

test("seed addressing", () => {
  const a = new Addressing(SEED_TOPOLOGY);
  assert.equal(a.nodeMgmt(1), "172.16.0.11");
  assert.equal(a.nodeMgmt(2), "172.16.0.12");
  assert.equal(a.podCidr(2), "10.244.2.0/24");
  assert.equal(a.nodeBridge(1), "10.244.1.1");
  assert.equal(a.podAddress(2, 50), "10.244.2.50");
  assert.equal(a.nodeOfPodAddress("10.244.2.7", 2), 2);
  assert.equal(a.nodeOfPodAddress("10.244.3.7", 2), undefined);
  assert.equal(a.maxNodes(), 200);
});

test("plan: every link line runs in a lab namespace, nothing in the host", () => {
  const plan = buildPlan({
    prefix: "keip-abc123",
    nodes: 2,
    iptablesModes: ["legacy", "nft"],
    topology: SEED_TOPOLOGY,
  });
  assert.deepEqual(plan.namespaces, [
    "keip-abc123-sw",
    "keip-abc123-router",
    "keip-abc123-ext",
    "keip-abc123-node1",
    "keip-abc123-node2",
    "keip-abc123-pod2",
  ]);
  for (const phase of plan.phases) {
    for (const batch of phase) assert.ok(plan.namespaces.includes(batch.ns));
  }
  const node1 = plan.phases[1]?.find((b) => b.ns === "keip-abc123-node1");
  assert.ok(node1?.lines.includes("route add 10.244.2.0/24 via 172.16.0.12 dev eth0"));
  assert.ok(node1?.lines.includes("route add default via 172.16.0.1 dev eth0"));
  assert.deepEqual(
    plan.iptables.map((i) => [i.ns, i.mode]),
    [
      ["keip-abc123-node1", "legacy"],
      ["keip-abc123-node2", "nft"],
    ],
  );
});

test("node iptables: FORWARD DROP, pod traffic accepted, service DNAT", () => {
  const input = nodeIptablesInput(new Addressing(SEED_TOPOLOGY), "10.244.2.50");
  assert.match(input, /^:FORWARD DROP/m);
  assert.match(input, /-s 10\.244\.0\.0\/16 -d 10\.244\.0\.0\/16 -j ACCEPT/);
  assert.match(input, /-d 192\.168\.223\.10\/32 -j DNAT --to-destination 10\.244\.2\.50/);
  assert.doesNotMatch(input, /-A LAB-CNI-FORWARD -s 10\.244\.0\.0\/16 -j ACCEPT/);
});

test("names", () => {
  assert.equal(vmiHostVeth("a"), "va");
  assert.ok(vmiHostVeth("a-very-long-vmi-name-indeed").length <= 15);
  assert.notEqual(vmiHostVeth("a-very-long-vmi-name-1"), vmiHostVeth("a-very-long-vmi-name-2"));
  assert.throws(() => checkPrefix("Keip"));
  assert.throws(() => checkPrefix(""));
  assert.equal(checkPrefix("keip-0a1b2c"), "keip-0a1b2c");
  assert.throws(() => checkVmiName("a b"));
  assert.throws(() => checkVmiName("a/../b"));
});

test("iptables modes", () => {
  assert.deepEqual(resolveIptablesModes(undefined, 2), ["nft", "nft"]);
  assert.deepEqual(resolveIptablesModes("mixed", 3), ["legacy", "nft", "legacy"]);
  assert.deepEqual(resolveIptablesModes(["nft", "legacy"], 2), ["nft", "legacy"]);
  assert.throws(() => resolveIptablesModes(["nft"], 2));
});
