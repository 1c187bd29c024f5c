// The operator on mutual TLS against real agents and a real kube-apiserver: node 2's agent
// presents node 1's certificate (a key stolen from node 1); the operator refuses it, and the
// binding's Ready condition says why, naming the identity it got. Node 1's own agent serves.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, listedBindings, startAgent } from "../src/lab/agents.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { labPki } from "../src/lab/lab-tls.js";
import { type LabOperator, startOperator } from "../src/lab/operator.js";
import { NEEDS_ROOT, eventually } from "./harness.js";

const CONFIG_DEFAULT = fileURLToPath(new URL("../../config/default", import.meta.url));

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

describe("the operator checks which agent answers", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  let cluster: LabCluster;
  let operator: LabOperator;
  const agents: NodeAgent[] = [];

  const ready = async (name: string): Promise<Condition | undefined> => {
    const out = await cluster.kubectl(["get", "eipbinding", name, "-o", "jsonpath={.status}"]);
    const status = (out ? JSON.parse(out) : {}) as { conditions?: Condition[] };
    return status.conditions?.find((c) => c.type === "Ready");
  };

  before(async () => {
    lab = await Lab.up({ nodes: 2, removeOnExit: true });
    cluster = await startLabCluster(lab);
    const files = await labPki(lab);
    const stolen = files.nodes.get(lab.node(1).name) ?? assert.fail();
    agents.push(await startAgent(lab, 1));
    agents.push(
      await startAgent(lab, 2, { extraArgs: ["--tls-cert", stolen.cert, "--tls-key", stolen.key] }),
    );
    await cluster.kubectl(["apply", "--server-side", "-k", CONFIG_DEFAULT]);
    operator = await startOperator(cluster);
  });

  after(async () => {
    await operator?.stop().catch(() => {});
    for (const a of agents) await a.stop().catch(() => {});
    await lab?.down();
  });

  test("node 1's agent is served; node 2's, presenting node 1's certificate, is refused with the reason", async () => {
    await cluster.createVmi("a", 1);
    await cluster.createVmi("b", 2);
    await cluster.applyEipBinding("a", "192.168.18.100", "a");
    await cluster.applyEipBinding("b", "192.168.18.101", "b");
    assert.ok(
      await eventually(async () => (await ready("a"))?.status === "True", 15_000),
      JSON.stringify(await ready("a")),
    );
    assert.ok(
      await eventually(async () => (await ready("b"))?.reason === "AgentUnavailable", 15_000),
      JSON.stringify(await ready("b")),
    );
    const b = await ready("b");
    assert.equal(b?.status, "False");
    assert.match(
      b?.message ?? "",
      new RegExp(
        `agent identity mismatch: ${lab.node(2).mgmtAddress.replace(/\./g, "\\.")} presented a certificate for "kube-eip-agent:${lab.node(1).name}", not kube-eip-agent:${lab.node(2).name}`,
      ),
    );
    // Through its local socket (eipctl over TCP refuses the impostor too: wrong name).
    const impostor = agents[1] ?? assert.fail();
    assert.deepEqual((await impostor.client.listBindings()).bindings, [], "nothing reached it");
    assert.deepEqual(
      (await listedBindings(lab, 1)).map((x) => x.eipAddr),
      ["192.168.18.100"],
    );
  });
});
