import { test } from "node:test";
import assert from "node:assert/strict";
import { bindingId, desiredByNode, planAntiEntropy, recordedBindings } from "./anti-entropy.js";
import type { EipBinding, KubeNode, Vmi } from "./types.js";

const nodes = new Map<string, KubeNode>(
  ["node1", "node2"].map((n, i) => [
    n,
    {
      metadata: { name: n },
      status: { addresses: [{ type: "InternalIP", address: `172.16.0.1${i + 1}` }] },
    },
  ]),
);
const vmis = new Map<string, Vmi>([
  [
    "default/a",
    {
      metadata: { name: "a" },
      status: { phase: "Running", nodeName: "node1", interfaces: [{ ipAddress: "10.244.1.10" }] },
    },
  ],
  [
    "default/b",
    {
      metadata: { name: "b" },
      status: { phase: "Running", nodeName: "node2", interfaces: [{ ipAddress: "10.244.2.10" }] },
    },
  ],
]);

function binding(name: string, eip: string, vmi: string, created: string): EipBinding {
  return {
    metadata: { name, namespace: "default", creationTimestamp: created },
    spec: { eipAddr: eip, vmiName: vmi },
  };
}

const desire = (bs: EipBinding[]) =>
  desiredByNode(
    bs,
    (ns, n) => vmis.get(`${ns}/${n}`),
    (n) => nodes.get(n),
  );

test("desired: each owned, placed binding on its VMI's node; conflicts give it to the oldest", () => {
  const d = desire([
    binding("x", "192.168.18.100", "a", "t1"),
    binding("y", "192.168.18.101", "b", "t1"),
    binding("z", "192.168.18.100", "b", "t2"),
    binding("gone", "192.168.18.102", "nope", "t1"),
  ]);
  assert.deepEqual(
    [...(d.get("node1") ?? [])],
    [["192.168.18.100", { vmi: "10.244.1.10", key: "default/x" }]],
  );
  assert.deepEqual(
    [...(d.get("node2") ?? [])],
    [["192.168.18.101", { vmi: "10.244.2.10", key: "default/y" }]],
  );
});

test("a missing binding is queued; an unwanted one is removed only on the second pass", () => {
  const d = desire([binding("x", "192.168.18.100", "a", "t1")]);
  const views = [
    { node: "node1", address: "172.16.0.11", held: [] },
    {
      node: "node2",
      address: "172.16.0.12",
      held: [{ eip: "192.168.18.200", vmi: "10.244.2.99" }],
    },
  ];
  const first = planAntiEntropy(d, views, new Set(), new Set());
  assert.deepEqual(first.enqueue, ["default/x"]);
  assert.deepEqual(first.unbind, [], "not on the first sight");
  const second = planAntiEntropy(d, views, new Set(), first.unwanted);
  assert.deepEqual(second.unbind, [
    { node: "node2", address: "172.16.0.12", eip: "192.168.18.200", vmi: "10.244.2.99" },
  ]);
});

test("a binding some status records (in flight) is never unwanted", () => {
  const b = binding("x", "192.168.18.100", "a", "t1");
  b.status = { eipAddr: "192.168.18.100", nodeName: "node2", vmiAddress: "10.244.2.50" };
  const d = desire([b]);
  const views = [
    {
      node: "node2",
      address: "172.16.0.12",
      held: [{ eip: "192.168.18.100", vmi: "10.244.2.50" }],
    },
  ];
  const recorded = recordedBindings([b]);
  assert.ok(recorded.has(bindingId("node2", "192.168.18.100", "10.244.2.50")));
  const plan = planAntiEntropy(
    d,
    views,
    recorded,
    new Set([bindingId("node2", "192.168.18.100", "10.244.2.50")]),
  );
  assert.deepEqual(plan.unbind, []);
});

test("a held binding with the wrong VMI address is both queued and (on the second pass) removed", () => {
  const d = desire([binding("x", "192.168.18.100", "a", "t1")]);
  const views = [
    {
      node: "node1",
      address: "172.16.0.11",
      held: [{ eip: "192.168.18.100", vmi: "10.244.1.99" }],
    },
  ];
  const first = planAntiEntropy(d, views, new Set(), new Set());
  assert.deepEqual(first.enqueue, ["default/x"]);
  const second = planAntiEntropy(d, views, new Set(), first.unwanted);
  assert.equal(second.unbind.length, 1);
});

test("lost: only what a status says the agent holds; a binding in flight is queued, not lost", () => {
  const settled = binding("x", "192.168.18.100", "a", "t1");
  settled.status = { eipAddr: "192.168.18.100", nodeName: "node1", vmiAddress: "10.244.1.10" };
  const fresh = binding("y", "192.168.18.101", "b", "t1"); // being bound: no status yet
  const moving = binding("z", "192.168.18.102", "b", "t1"); // its VMI went to node2
  moving.status = { eipAddr: "192.168.18.102", nodeName: "node1", vmiAddress: "10.244.1.10" };
  const deleting = binding("w", "192.168.18.103", "a", "t1"); // its finalizer just unbound it
  deleting.metadata.deletionTimestamp = "t2";
  deleting.status = { eipAddr: "192.168.18.103", nodeName: "node1", vmiAddress: "10.244.1.10" };
  const all = [settled, fresh, moving, deleting];
  const d = desire(all);
  assert.deepEqual(d.get("node1")?.get("192.168.18.103"), {
    vmi: "10.244.1.10",
    key: "default/w",
    deleting: true,
  });
  const views = [
    { node: "node1", address: "172.16.0.11", held: [] },
    { node: "node2", address: "172.16.0.12", held: [] },
  ];
  const plan = planAntiEntropy(d, views, recordedBindings(all), new Set());
  assert.deepEqual([...plan.enqueue].sort(), ["default/w", "default/x", "default/y", "default/z"]);
  assert.deepEqual(plan.lost, ["default/x"]);
});
