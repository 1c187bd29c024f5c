// Anti-entropy's dataplane half and the conditions it writes: Ready True only when both
// Programmed and Announced are; an Event for each turn to False; an agent that does not
// answer makes its bindings Ready False (AgentUnavailable) without queueing a reconcile.
import assert from "node:assert/strict";
import { test } from "node:test";
import { desiredByNode } from "./anti-entropy.js";
import { planDataplaneUpdates } from "./dataplane-status.js";
import { dataplaneEvents, nextStatus } from "./status.js";
import { PROGRAMMED, World, reconcilerOn } from "./test-world.js";
import type { DataplaneState, EipBinding } from "./types.js";

const NOW = "2026-11-26T00:00:00.000Z";

async function boundWorld(): Promise<World> {
  const w = new World();
  w.addNode("node1", "172.16.0.11");
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("web", "192.168.18.100", "vm", "2026-01-01T00:00:00Z");
  await reconcilerOn(w).reconcile("default/web");
  return w;
}

function plan(w: World, down: string[] = []) {
  const bindings = [...w.bindings.values()];
  const desired = desiredByNode(
    bindings,
    (ns, n) => w.vmi(ns, n),
    (n) => w.node(n),
  );
  const views = [...w.nodes.values()]
    .filter((n) => !down.includes(n.metadata.name))
    .map((n) => {
      const address = n.status?.addresses?.[0]?.address ?? "";
      const held = [...(w.agents.get(address) ?? new Map<string, string>())].map(([eip, vmi]) => ({
        eip,
        vmi,
        state: w.dataplane.get(`${address} ${eip}`) ?? PROGRAMMED,
      }));
      return { node: n.metadata.name, address, held };
    });
  const unreachable = down.map((node) => ({ node, address: "172.16.0.11", reason: "refused" }));
  return planDataplaneUpdates(bindings, desired, views, unreachable);
}

function conditions(b: EipBinding | undefined): string[] {
  return (b?.status?.conditions ?? []).map((c) => `${c.type}=${c.status}/${c.reason}`);
}

const MISSING: DataplaneState = {
  ...PROGRAMMED,
  programmed: { status: "False", reason: "Missing", message: "the kernel lacked: ..." },
};

test("a bind writes Programmed and Announced from the agent's read-back; Ready True", async () => {
  const w = await boundWorld();
  assert.deepEqual(conditions(w.bindings.get("default/web")), [
    "Programmed=True/ReadBack",
    "Announced=True/Announced",
    "Ready=True/Bound",
  ]);
});

test("drift read back: Programmed False, Ready False NotProgrammed, one Warning; back True", async () => {
  const w = await boundWorld();
  w.dataplane.set("172.16.0.11 192.168.18.100", MISSING);
  const [u] = plan(w);
  assert.ok(u);
  const next = nextStatus(u.binding, u.outcome, NOW);
  assert.deepEqual(conditions({ ...u.binding, status: next }), [
    "Programmed=False/Missing",
    "Announced=True/Announced",
    "Ready=False/NotProgrammed",
  ]);
  assert.deepEqual(
    dataplaneEvents(u.binding.status, next).map((e) => `${e.type} ${e.reason}`),
    ["Warning NotProgrammed"],
  );
  // The same again: no second Event.
  assert.deepEqual(
    dataplaneEvents(next, nextStatus({ ...u.binding, status: next }, u.outcome, NOW)),
    [],
  );
  w.dataplane.delete("172.16.0.11 192.168.18.100");
  const [v] = plan(w);
  assert.ok(v);
  const back = nextStatus({ ...v.binding, status: next }, v.outcome, NOW);
  assert.equal(back.conditions?.at(-1)?.status, "True");
  assert.deepEqual(
    dataplaneEvents(next, back).map((e) => `${e.type} ${e.reason}`),
    ["Normal Programmed"],
  );
});

test("Announced False makes Ready False NotAnnounced", async () => {
  const w = await boundWorld();
  w.dataplane.set("172.16.0.11 192.168.18.100", {
    ...PROGRAMMED,
    announced: { status: "False", reason: "NoEstablishedPeer", message: "peers: 10.1.0.1 ACTIVE" },
  });
  const [u] = plan(w);
  assert.ok(u);
  const ready = nextStatus(u.binding, u.outcome, NOW).conditions?.at(-1);
  assert.equal(ready?.reason, "NotAnnounced");
  assert.match(ready?.message ?? "", /NoEstablishedPeer.*10\.1\.0\.1 ACTIVE/);
});

test("an agent that does not answer: Unknown conditions, Ready False AgentUnavailable", async () => {
  const w = await boundWorld();
  const [u] = plan(w, ["node1"]);
  assert.ok(u);
  assert.deepEqual(conditions({ ...u.binding, status: nextStatus(u.binding, u.outcome, NOW) }), [
    "Programmed=Unknown/AgentUnavailable",
    "Announced=Unknown/AgentUnavailable",
    "Ready=False/AgentUnavailable",
  ]);
});

test("a binding the agent lacks, or not placed, is left to the reconciler", async () => {
  const w = await boundWorld();
  w.agents.get("172.16.0.11")?.clear();
  assert.deepEqual(plan(w), []);
  const v = await boundWorld();
  v.setVmi("vm", "Succeeded", "node1", "10.244.1.10");
  assert.deepEqual(plan(v), []);
});

test("a bind waits for the agent's read-back that follows it", async () => {
  const w = new World();
  w.addNode("node1", "172.16.0.11");
  w.setVmi("vm", "Running", "node1", "10.244.1.10");
  w.addBinding("web", "192.168.18.100", "vm", "2026-01-01T00:00:00Z");
  const key = "172.16.0.11 192.168.18.100";
  const unread = { status: "Unknown" as const, reason: "NotReadBack", message: "not yet" };
  w.dataplane.set(key, { programmed: unread, announced: unread });
  const sleeps: number[] = [];
  const r = reconcilerOn(w, {
    sleep: async (ms) => {
      sleeps.push(ms);
      if (sleeps.length === 3) w.dataplane.delete(key);
    },
  });
  await r.reconcile("default/web");
  assert.deepEqual(sleeps, [20, 40, 80]);
  assert.equal(w.ready("web")?.reason, "Bound");
});
