// A crash at any instant loses nothing that was acknowledged: SIGKILL the agent in the
// middle of a stream of concurrent binds, start it again, and every bind that was answered
// "Succeed" must be held and in the kernel.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, startAgent } from "../src/lab/agents.js";
import { NEEDS_ROOT, sleep } from "./harness.js";

describe("crash consistency", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  let agent: NodeAgent;

  before(async () => {
    lab = await Lab.up({ nodes: 1, removeOnExit: true });
    agent = await startAgent(lab, 1);
  });

  after(async () => {
    await agent?.stop();
    await lab?.down();
  });

  test("every acknowledged bind survives a SIGKILL in the middle of a burst", async () => {
    const acknowledged: string[] = [];
    const client = agent.client;
    const loops = Array.from({ length: 8 }, async (_, loop) => {
      for (let i = loop; i < 240; i += 8) {
        const eip = `192.168.18.${10 + i}`;
        const rsp = await client
          .eipOperate({ action: "bind", eipAddr: eip, vmiAddr: `10.244.1.${10 + i}` }, 5000)
          .catch(() => undefined);
        if (rsp === undefined) return; // the agent is gone
        if (rsp.result === "Succeed") acknowledged.push(eip);
      }
    });
    let finished = false;
    const all = Promise.all(loops).then(() => (finished = true));
    // Kill as soon as some binds are answered: the rest are in flight or not yet sent.
    while (acknowledged.length < 40 && !finished) await sleep(2);
    await agent.kill();
    await all;
    assert.ok(acknowledged.length > 0, "some binds were answered before the kill");
    assert.ok(acknowledged.length < 240, "the kill came in the middle of the burst");

    agent = await startAgent(lab, 1, { name: "agent-node1-after-crash" });
    const held = new Set((await agent.client.listBindings()).bindings.map((b) => b.eipAddr));
    const lost = acknowledged.filter((eip) => !held.has(eip));
    assert.deepEqual(
      lost,
      [],
      `${lost.length} of ${acknowledged.length} acknowledged binds were lost`,
    );
    const nat = (await lab.nodeExec(1, ["iptables-nft-save", "-t", "nat"])).stdout;
    const missing = [...held].filter(
      (eip) => !nat.includes(`-A KUBE-EIP-PREROUTING -d ${eip}/32 -j DNAT`),
    );
    assert.deepEqual(missing, [], "every held binding is in the kernel");
  });
});
