// Upgrading a node from the seed's Go agent: the node carries the seed's kernel state and
// its per-binding metadata files; our agent starts, adopts the bindings and rewrites the
// state into its own form while a steady ping through the EIP loses nothing.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Lab } from "../src/lab/lab.js";
import {
  type NodeAgent,
  kernelSnapshot,
  labDataplane,
  seedNodeHolding,
  startAgent,
} from "../src/lab/agents.js";
import { NEEDS_ROOT, eventually } from "./harness.js";

const EIP = "192.168.18.100";
const PORT = 8080;
/** The site's FORWARD rule that names the seed's set (seedNodeHolding). */
const SITE_ACCEPT = ["-m", "set", "--match-set", "kube-eip-vmi", "dst", "-j", "ACCEPT"];

describe("upgrade from the seed's agent", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  let agent: NodeAgent | undefined;
  let vmi: string;
  let seedDir: string;

  before(async () => {
    lab = await Lab.up({ nodes: 2, iptablesModes: "nft", removeOnExit: true });
    vmi = (await lab.addVmi("a", 1)).address;
    await lab.startTcpServer(lab.vmiNamespace("a"), PORT);
    seedDir = await seedNodeHolding(lab, 1, EIP, vmi);
  });

  after(async () => {
    await agent?.stop();
    await lab?.down();
  });

  test("the seed's state carries traffic before the upgrade", async () => {
    assert.equal(
      (await lab.tcpRequest(lab.describe().outside.namespace, EIP, PORT)).trim(),
      lab.topology.outside,
    );
  });

  test("our agent adopts the seed's bindings without losing a packet, and takes the state over", async () => {
    const outside = lab.describe().outside.namespace;
    const steady = lab.ping(outside, EIP, { count: 400, intervalSec: 0.01, timeoutSec: 1 });
    await new Promise((r) => setTimeout(r, 500));
    agent = await startAgent(lab, 1, { seedStateDir: seedDir });
    const result = await steady;
    assert.equal(result.sent, 400);
    assert.equal(
      result.received,
      400,
      `lost ${result.sent - result.received} of ${result.sent} pings during the upgrade`,
    );

    const listed = await agent.client.listBindings();
    assert.deepEqual(
      listed.bindings.map((b) => [b.eipAddr, b.vmiAddr]),
      [[EIP, vmi]],
    );
    const snap = await kernelSnapshot(lab, 1);
    assert.match(snap.addresses ?? "", new RegExp(`inet ${EIP}/32 `), "the EIP is now a /32");
    assert.doesNotMatch(snap.addresses ?? "", new RegExp(`inet ${EIP}/24 `));
    assert.match(
      snap.routes ?? "",
      /^throw 10\.244\.0\.0\/16 table eip_route/m,
      "internal nets follow the node's routing",
    );
    assert.doesNotMatch(snap.routes ?? "", /via 10\.244\.1\.1 dev cni0 table eip_route/);
    if (labDataplane() === "nftables") {
      // The seed's NAT moved to our table; its chains went, its set stayed only emptied,
      // as the site's FORWARD rule still names it (seedNodeHolding).
      assert.match(snap.nftables ?? "", new RegExp(`^\\s*element ${EIP} : ${vmi}$`, "m"));
      assert.doesNotMatch(snap.iptables ?? "", /KUBE-EIP/);
      assert.doesNotMatch(snap.ipset ?? "", /^add /m, "no member left in the seed's sets");
      // Once the site's rule is gone, so is the set (a re-read, every second here).
      await lab.nodeExec(1, ["iptables-nft", "-D", "FORWARD", ...SITE_ACCEPT]);
      const sets = async () => (await lab.nodeExec(1, ["ipset", "list", "-n"])).stdout;
      assert.ok(await eventually(async () => (await sets()) === "", 5000, 200), await sets());
    }
    assert.equal((await lab.tcpRequest(outside, EIP, PORT)).trim(), lab.topology.outside);
    const out = await lab.startTcpServer(outside, 9090);
    assert.equal(
      (await lab.tcpRequest(lab.vmiNamespace("a"), lab.topology.outside, 9090)).trim(),
      EIP,
    );
    await out.stop();
  });

  test("once our state exists, the seed's files are not read again", async () => {
    assert.ok(agent);
    await agent.client.eipOperate({ action: "unbind", eipAddr: EIP, vmiAddr: vmi });
    await agent.stop();
    agent = await startAgent(lab, 1, { seedStateDir: seedDir, name: "agent-node1-again" });
    assert.deepEqual((await agent.client.listBindings()).bindings, []);
  });
});
