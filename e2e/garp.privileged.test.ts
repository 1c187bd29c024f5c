// Gratuitous ARP when an EIP arrives on a node: moving a binding from node 1 to node 2 (bind
// on the new node first, then unbind on the old one) must move the router's neighbour entry
// for the EIP to node 2's MAC at once, without anyone flushing the router's cache.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, startAgent } from "../src/lab/agents.js";
import { NEEDS_ROOT, sleep } from "./harness.js";

const EIP = "192.168.18.100";

describe("gratuitous ARP", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  const agents: NodeAgent[] = [];

  before(async () => {
    lab = await Lab.up({ nodes: 2, removeOnExit: true });
    agents.push(await startAgent(lab, 1), await startAgent(lab, 2));
  });

  after(async () => {
    for (const a of agents) await a.stop();
    await lab?.down();
  });

  /** The router's neighbour entry for the EIP on the public segment: its MAC, or "". */
  async function routerMac(): Promise<string> {
    const router = lab.describe().router;
    const { stdout } = await lab.exec(router.namespace, [
      "ip",
      "-json",
      "neigh",
      "show",
      EIP,
      "dev",
      router.publicDevice,
    ]);
    const entries = JSON.parse(stdout) as { lladdr?: string }[];
    return entries[0]?.lladdr ?? "";
  }

  test("a binding moved to another node moves the router's neighbour entry within a second", async (t) => {
    const vmi = await lab.addVmi("a", 1);
    const [agent1, agent2] = agents as [NodeAgent, NodeAgent];
    assert.equal(
      (await agent1.client.eipOperate({ action: "bind", eipAddr: EIP, vmiAddr: vmi.address }))
        .result,
      "Succeed",
    );
    const outside = lab.describe().outside.namespace;
    assert.ok((await lab.ping(outside, EIP)).replied);
    assert.equal(await routerMac(), lab.node(1).gatewayMac);
    await sleep(1100); // past the neighbour entry's locktime, as in a real site

    const steady = lab.ping(outside, EIP, { count: 300, intervalSec: 0.01, timeoutSec: 1 });
    await sleep(500);
    const moved = await lab.moveVmi("a", 2);
    assert.equal(
      (await agent2.client.eipOperate({ action: "bind", eipAddr: EIP, vmiAddr: moved })).result,
      "Succeed",
    );
    const bound = Date.now();
    assert.equal(
      (await agent1.client.eipOperate({ action: "unbind", eipAddr: EIP, vmiAddr: vmi.address }))
        .result,
      "Succeed",
    );
    let followedMs = -1;
    while (Date.now() - bound < 3000) {
      if ((await routerMac()) === lab.node(2).gatewayMac) {
        followedMs = Date.now() - bound;
        break;
      }
      await sleep(20);
    }
    const result = await steady;
    t.diagnostic(`router followed the EIP ${followedMs} ms after the bind on node 2`);
    t.diagnostic(`pings lost during the move: ${result.sent - result.received} of ${result.sent}`);
    assert.ok(
      followedMs >= 0 && followedMs <= 1000,
      `the router's entry moved after ${followedMs} ms`,
    );
    assert.ok(result.received > 0);
    assert.ok((await lab.ping(outside, EIP)).replied, "the EIP answers from node 2");
  });
});
