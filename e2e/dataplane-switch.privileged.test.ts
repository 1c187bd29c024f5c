// Switching a live node between the dataplanes: the agent restarted with the other
// --dataplane moves every binding while pings at 10 ms intervals run both ways through an
// EIP (from the outside host to the EIP, from the VMI to the outside), loses none of them,
// and leaves nothing of the other dataplane behind. Both directions, on a FORWARD DROP node.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Lab } from "../src/lab/lab.js";
import type { LabProcess } from "../src/lab/process.js";
import {
  type Dataplane,
  type NodeAgent,
  eipctl,
  kernelSnapshot,
  startAgent,
} from "../src/lab/agents.js";
import { NEEDS_ROOT, whoami } from "./harness.js";

const EIP_A = "192.168.18.100";
const EIP_B = "192.168.18.101";
const PORT_A = 8080;
/** Pings at 10 ms: long enough to cover a restart on a loaded machine. */
const PINGS = 6000;

describe("switching dataplanes on a live node", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  let agent: NodeAgent;
  let vmiA: string;
  let vmiB: string;
  let onIptables: Record<string, string>;
  const outside = () => lab.describe().outside.namespace;

  before(async () => {
    lab = await Lab.up({ nodes: 2, iptablesModes: "nft", removeOnExit: true });
    vmiA = (await lab.addVmi("a", 1)).address;
    vmiB = (await lab.addVmi("b", 1)).address;
    await lab.startTcpServer(lab.vmiNamespace("a"), PORT_A);
    agent = await startAgent(lab, 1, { dataplane: "iptables" });
    for (const [eip, vmi] of [
      [EIP_A, vmiA],
      [EIP_B, vmiB],
    ] as const) {
      const r = await eipctl(lab, 1, ["--action", "bind", "--eip-ip", eip, "--vmi-ip", vmi]);
      assert.equal(r.code, 0, r.stderr);
    }
    onIptables = await kernelSnapshot(lab, 1);
  });

  after(async () => {
    await agent?.stop();
    await lab?.down();
  });

  const ping = (ns: string, address: string, name: string) =>
    lab.spawnIn(ns, ["ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", String(PINGS), address], {
      name,
    });

  /** Sent and received of a finished ping. */
  const counted = async (p: LabProcess) => {
    await p.exited;
    const match = /(\d+) packets transmitted, (\d+) received/.exec(p.output());
    assert.ok(match, p.output());
    return { sent: Number(match[1]), received: Number(match[2]) };
  };

  /** Restarts the agent on `to` while both pings run; returns their counts. */
  async function switchTo(to: Dataplane) {
    const inbound = await ping(outside(), EIP_A, `ping-in-${to}`);
    const outbound = await ping(lab.vmiNamespace("b"), lab.topology.outside, `ping-out-${to}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    await agent.stop();
    agent = await startAgent(lab, 1, { dataplane: to, name: `agent-node1-${to}` });
    await agent.proc.waitFor(/"msg":"kernel state restored"/, 30_000);
    assert.ok(
      inbound.running() && outbound.running(),
      "the pings outlast the switch (else they prove nothing)",
    );
    return { inbound: await counted(inbound), outbound: await counted(outbound) };
  }

  test("iptables -> nftables: no ping lost, no chain or ipset of ours left", async () => {
    const { inbound, outbound } = await switchTo("nftables");
    assert.equal(inbound.received, inbound.sent, `outside -> EIP: ${JSON.stringify(inbound)}`);
    assert.equal(outbound.received, outbound.sent, `VMI -> outside: ${JSON.stringify(outbound)}`);
    const snap = await kernelSnapshot(lab, 1);
    assert.doesNotMatch(snap.iptables ?? "", /KUBE-EIP|kube-eip-|k8s_internal_net/);
    assert.doesNotMatch(snap.ipset ?? "", /kube-eip-|k8s_internal_net/);
    for (const [eip, vmi] of [
      [EIP_A, vmiA],
      [EIP_B, vmiB],
    ]) {
      assert.match(snap.nftables ?? "", new RegExp(`^\\s*element ${eip} : ${vmi}$`, "m"));
    }
    assert.equal(await whoami(lab, outside(), EIP_A, PORT_A), lab.topology.outside);
    assert.equal((await agent.client.listBindings()).bindings.length, 2);
  });

  test("nftables -> iptables: no ping lost, no table of ours left, the kernel as before", async () => {
    const { inbound, outbound } = await switchTo("iptables");
    assert.equal(inbound.received, inbound.sent, `outside -> EIP: ${JSON.stringify(inbound)}`);
    assert.equal(outbound.received, outbound.sent, `VMI -> outside: ${JSON.stringify(outbound)}`);
    const snap = await kernelSnapshot(lab, 1);
    assert.equal(snap.nftables, "");
    // ipset save lists a set's members in hash order: compare them as sets of lines.
    const sorted = (k: Record<string, string>) => ({
      ...k,
      ipset: (k.ipset ?? "").split("\n").sort().join("\n"),
    });
    assert.deepEqual(
      sorted(snap),
      sorted(onIptables),
      "exactly what the iptables dataplane held before",
    );
    assert.equal(await whoami(lab, outside(), EIP_A, PORT_A), lab.topology.outside);
  });
});
