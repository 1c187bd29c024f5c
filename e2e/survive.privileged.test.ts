// Connections through an EIP survive what happens to the agent and to the node's state:
// a TCP stream from the outside host to the EIP and one from the VMI to the outside host,
// each sending both ways every 10 ms, go on without a reset across an agent restart, a
// SIGKILL, an upgrade to another build, `conntrack -F` and the loss of our NAT and forward
// state (the agent repairs it). Run for each dataplane variant (iptables on iptables-nft
// and on iptables-legacy, nftables). The longest stall of each event is printed, never
// asserted beyond "the stream carries data again within 10 s". Why it holds:
// docs/connections.md. The migration that keeps the VMI's address is survive-migration.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, eipctl, startAgent } from "../src/lab/agents.js";
import { NFT_TABLE } from "../src/model/desired.js";
import type { TcpStream } from "../src/lab/streams.js";
import { NEEDS_ROOT, eventually } from "./harness.js";
import { EIP, RUNS, across, eipStreams, otherBuild } from "./survive-harness.js";

const LOOSE = "net.netfilter.nf_conntrack_tcp_loose";

for (const { mode, dataplane } of RUNS) {
  describe(
    `connections survive: dataplane ${dataplane} on iptables-${mode}`,
    { skip: NEEDS_ROOT },
    () => {
      let lab: Lab;
      let agent: NodeAgent;
      let streams: TcpStream[] = [];
      let starts = 0;
      const figures: string[] = [];
      const start = (binary?: string) =>
        startAgent(lab, 1, { dataplane, name: `agent-node1-${++starts}`, binary });
      const event = async (what: string, run: () => Promise<void>, settleMs?: number) => {
        const f = await across(lab, "a", streams, what, run, settleMs);
        figures.push(`${what}: ${Object.values(f.stalls).join("/")} ms, ${f.retransmits} rtx`);
      };

      before(async () => {
        lab = await Lab.up({ nodes: 2, iptablesModes: mode, removeOnExit: true });
        const vmi = await lab.addVmi("a", 1);
        agent = await start();
        const bound = await eipctl(lab, 1, [
          "--action",
          "bind",
          "--eip-ip",
          EIP,
          "--vmi-ip",
          vmi.address,
        ]);
        assert.equal(bound.code, 0, bound.stderr);
        streams = await eipStreams(lab, "a");
      });

      after(async () => {
        console.log(`# ${dataplane} on iptables-${mode}: ${figures.join("; ")}`);
        await agent?.stop();
        await lab?.down();
      });

      test("an agent restart (SIGTERM, start)", async () => {
        await event("restart", async () => {
          await agent.stop();
          agent = await start();
        });
      });

      test("an agent killed (SIGKILL, start)", async () => {
        await event("SIGKILL", async () => {
          await agent.kill();
          agent = await start();
        });
      });

      test("an upgrade: the agent restarted as another build", async () => {
        const next = await otherBuild(lab.prefix, "99.0.0-next");
        try {
          const { stdout } = await promisify(execFile)(process.execPath, [next.agent, "--version"]);
          assert.match(stdout, /99\.0\.0-next \(commit upgrade\)/);
          await event("upgrade", async () => {
            await agent.stop();
            agent = await start(next.agent);
          });
          assert.equal(agent.proc.argv[1], next.agent, "the new build runs");
        } finally {
          await agent.stop();
          await next.remove();
          agent = await start();
        }
      });

      test("conntrack -F on the node", async () => {
        await event(
          "conntrack -F",
          async () => {
            await lab.nodeExec(1, ["conntrack", "-F"]);
          },
          500,
        );
      });

      const drift =
        dataplane === "nftables" ? "our nftables table deleted" : "our iptables chains flushed";
      test(`drift repair: ${drift}, the agent puts it back`, async () => {
        const mine = () =>
          dataplane === "nftables"
            ? lab.nodeExec(1, ["nft", "list", "table", "ip", NFT_TABLE]).then((r) => r.stdout)
            : lab.nodeExec(1, [`iptables-${mode}-save`, "-t", "nat"]).then((r) => r.stdout);
        const intact = await mine();
        await event(
          drift,
          async () => {
            if (dataplane === "nftables") {
              await lab.nodeExec(1, ["nft", "delete", "table", "ip", NFT_TABLE]);
            } else {
              const ipt = `iptables-${mode}`;
              await lab.nodeExec(1, [ipt, "-t", "nat", "-F", "KUBE-EIP-PREROUTING"]);
              await lab.nodeExec(1, [ipt, "-t", "nat", "-F", "KUBE-EIP-POSTROUTING"]);
              await lab.nodeExec(1, [ipt, "-t", "filter", "-F", "KUBE-EIP-FORWARD"]);
            }
          },
          2500,
        );
        // Packet counts are not the rules: iptables prints them as [packets:bytes], nft as
        // "counter packets N bytes M" on the per-EIP traffic sets (which restart from zero).
        const strip = (s: string) =>
          s.replace(/\[\d+:\d+\]|^#.*$/gm, "").replace(/ counter packets \d+ bytes \d+/g, "");
        assert.equal(strip(await mine()), strip(intact), "repaired");
      });

      test(`with ${LOOSE}=0 the agent warns at start (conntrack -F would reset inbound streams)`, async () => {
        await lab.nodeExec(1, ["sysctl", "-q", "-w", `${LOOSE}=0`]);
        try {
          await agent.stop();
          agent = await start();
          assert.ok(
            await eventually(
              async () => /nf_conntrack_tcp_loose is 0/.test(agent.proc.output()),
              5000,
            ),
            "the agent warns",
          );
        } finally {
          await lab.nodeExec(1, ["sysctl", "-q", "-w", `${LOOSE}=1`]);
        }
        await agent.stop();
        agent = await start();
        assert.doesNotMatch(agent.proc.output(), /nf_conntrack_tcp_loose is 0/);
        for (const s of streams) await s.waitFlowing(Date.now(), 10_000);
        assert.deepEqual(
          streams.flatMap((s) => s.problems()),
          [],
        );
      });
    },
  );
}
