// A live migration in which the VMI keeps its address (a CNI that keeps VM addresses across
// nodes: Lab.migrateVmi), end to end: a real kube-apiserver, the operator, agents on both
// nodes; the test plays virt-handler (the VMI's status). A TCP stream from the outside host
// to the EIP and one from the VMI to the outside host go on across the move and back, with
// no reset; the longest stall is printed. Where the address changes, old connections cannot
// survive: the test prints when the path to the new address opened and when a new TCP
// connection worked after the status write (each bound at 5 s). For each dataplane variant. Why it holds: docs/connections.md.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, listedBindings, startAgent } from "../src/lab/agents.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { type LabOperator, startOperator } from "../src/lab/operator.js";
import type { TcpStream } from "../src/lab/streams.js";
import { NEEDS_ROOT, eventually, sleep, whoami } from "./harness.js";
import { EIP, RUNS, across, eipStreams } from "./survive-harness.js";

const PORT = 8080;
/** Moves start this far apart: the agent's three gratuitous ARPs, a second apart, are over. */
const MOVE_APART_MS = 3500;

for (const { mode, dataplane } of RUNS) {
  describe(
    `a migration keeping the VMI's address: dataplane ${dataplane} on iptables-${mode}`,
    { skip: NEEDS_ROOT },
    () => {
      let lab: Lab;
      let cluster: LabCluster;
      let operator: LabOperator | undefined;
      const agents: NodeAgent[] = [];
      let streams: TcpStream[] = [];
      let lastMove = 0;
      const figures: string[] = [];
      const holds = async (node: number) =>
        (await listedBindings(lab, node)).some((b) => b.eipAddr === EIP);
      /** The operator has the EIP on `to` only. */
      const movedTo = (to: number) =>
        eventually(async () => (await holds(to)) && !(await holds(3 - to)), 10_000, 20);

      before(async () => {
        lab = await Lab.up({ nodes: 2, iptablesModes: mode, removeOnExit: true });
        cluster = await startLabCluster(lab);
        for (const node of [1, 2]) agents.push(await startAgent(lab, node, { dataplane }));
        operator = await startOperator(cluster);
        await cluster.createVmi("a", 1);
        await lab.startTcpServer(lab.vmiNamespace("a"), PORT);
        await cluster.applyEipBinding("a", EIP, "a");
        await cluster.kubectl(["wait", "--for=condition=Ready", "eipbinding/a", "--timeout=20s"]);
        assert.ok(await movedTo(1), "bound on node1");
        streams = await eipStreams(lab, "a");
      });

      after(async () => {
        console.log(`# migration, ${dataplane} on iptables-${mode}: ${figures.join("; ")}`);
        await operator?.stop().catch(() => {});
        for (const a of agents) await a.stop().catch(() => {});
        await lab?.down();
      });

      const migrate = async (to: number) => {
        await sleep(lastMove + MOVE_APART_MS - Date.now());
        lastMove = Date.now();
        const address = lab.vmi("a").address;
        const f = await across(lab, "a", streams, `migration to node${to}`, async () => {
          await cluster.moveVmi("a", to, { keepAddress: true });
          assert.ok(await movedTo(to), `the operator moved the EIP to node${to}`);
        });
        assert.equal(lab.vmi("a").address, address, "the same address");
        figures.push(`to node${to}: ${Object.values(f.stalls).join("/")} ms, ${f.retransmits} rtx`);
      };

      test("to node 2: both streams go on, no reset", () => migrate(2));

      test("and back to node 1: both streams go on, no reset", () => migrate(1));

      test("a migration that changes the address: a new connection works again soon", async (t) => {
        for (const s of streams) await s.stop(); // they cannot survive a new address
        await sleep(lastMove + MOVE_APART_MS - Date.now());
        const outside = lab.describe().outside.namespace;
        const written = await cluster.moveVmi("a", 2);
        // When the path opens (UDP requests that give up after 200 ms), and when a TCP
        // connection works: one whose SYN was lost before that waits for its retransmission,
        // 1 s later (the kernel's initial RTO), as any client would.
        const udp = eventually(
          async () =>
            (await lab.udpRequest(outside, EIP, PORT, { timeoutMs: 200 }).catch(() => "")) ===
            lab.topology.outside,
          5_000,
          0,
        ).then((ok) => (ok ? performance.now() - written : undefined));
        const tcp = eventually(
          async () => (await whoami(lab, outside, EIP, PORT)) === lab.topology.outside,
          5_000,
          20,
        ).then((ok) => (ok ? performance.now() - written : undefined));
        const [path, connection] = await Promise.all([udp, tcp]);
        assert.ok(path !== undefined, "UDP to the EIP is answered from the new address");
        assert.ok(connection !== undefined, "a new TCP connection to the EIP works");
        const line = `path open after ${path.toFixed(0)} ms, a TCP connection after ${connection.toFixed(0)} ms`;
        t.diagnostic(`${line} (from the status write)`);
        console.log(`# new address (${lab.vmi("a").address}): ${line}`);
        figures.push(`new address: ${line}`);
      });
    },
  );
}
