// An EipBinding's Programmed and Announced conditions say what the node and the network
// really do, as a user sees them in `kubectl get eipbinding`: a real kube-apiserver, a real
// agent (BGP to the BIRD router) and the operator. Broken on purpose, one thing at a time:
// the BIRD peer disabled (Announced False, then True when enabled), our NAT removed behind
// the agent's back (an iptables chain flushed, or our nftables table deleted: Programmed
// False, then True once a read-back finds it repaired), the agent killed (Ready False
// AgentUnavailable, both conditions Unknown, then True when it is back). Each must show
// within the agent's resync interval plus the operator's anti-entropy interval (3 s) and
// slack; the times measured are printed, not asserted. Every dataplane: iptables on both
// backends, nftables.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, startAgent } from "../src/lab/agents.js";
import { type BgpRouter, startBgpRouter } from "../src/lab/bgp-router.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { type LabOperator, startOperator } from "../src/lab/operator.js";
import { NEEDS_ROOT, eventually } from "./harness.js";

const EIP = "192.168.18.100";
/** The agent's resync interval here: longer than anti-entropy's 3 s, so a drift's False shows. */
const RESYNC_S = 5;
const ANTI_ENTROPY_S = 3;
/** Within a resync interval, anti-entropy's pass and slack (a loaded 2-core machine). */
const VISIBLE_MS = (RESYNC_S + ANTI_ENTROPY_S + 7) * 1000;

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

const VARIANTS = [
  { dataplane: "iptables", backend: "nft" },
  { dataplane: "iptables", backend: "legacy" },
  { dataplane: "nftables", backend: "nft" },
] as const;

for (const v of VARIANTS) {
  describe(
    `conditions on --dataplane ${v.dataplane} (iptables-${v.backend})`,
    { skip: NEEDS_ROOT },
    () => {
      let lab: Lab;
      let router: BgpRouter;
      let cluster: LabCluster;
      let operator: LabOperator;
      let agent: NodeAgent;
      const start = () =>
        startAgent(lab, 1, {
          dataplane: v.dataplane,
          resyncSeconds: RESYNC_S,
          extraArgs: [...router.agentArgs(1), "--bgp-listen-port", "179"],
        });

      const conditions = async (): Promise<Map<string, Condition>> => {
        const out = await cluster.kubectl(["get", "eipbinding", "web", "-o", "json"]);
        const b = JSON.parse(out) as { status?: { conditions?: Condition[] } };
        return new Map((b.status?.conditions ?? []).map((c) => [c.type, c]));
      };
      /** The row `kubectl get eipbinding web` prints: READY PROGRAMMED ANNOUNCED. */
      const columns = async (): Promise<string> => {
        const out = await cluster.kubectl(["get", "eipbinding", "web"]);
        const [header = "", row = ""] = out.trim().split("\n");
        const cells = row.trim().split(/\s+/);
        const names = header.trim().split(/\s+/);
        return ["READY", "PROGRAMMED", "ANNOUNCED"]
          .map((n) => cells[names.indexOf(n)] ?? "?")
          .join(" ");
      };
      /** ms until `kubectl get eipbinding` shows `want`; fails past VISIBLE_MS. */
      const shows = async (want: string, since: number): Promise<number> => {
        const ok = await eventually(async () => (await columns()) === want, VISIBLE_MS, 100);
        assert.ok(ok, `kubectl get eipbinding shows ${want} (it shows ${await columns()})`);
        return performance.now() - since;
      };
      const events = async (): Promise<string[]> => {
        const out = await cluster.kubectl([
          "get",
          "events",
          "--field-selector",
          "involvedObject.name=web",
          "-o",
          "jsonpath={range .items[*]}{.reason}{'\\n'}{end}",
        ]);
        return out.split("\n").filter((l) => l !== "");
      };

      before(async () => {
        lab = await Lab.up({ nodes: 1, iptablesModes: v.backend, removeOnExit: true });
        router = await startBgpRouter(lab);
        cluster = await startLabCluster(lab);
        agent = await start();
        operator = await startOperator(cluster);
        await cluster.createVmi("web", 1);
        await cluster.applyEipBinding("web", EIP, "web");
      });

      after(async () => {
        await operator?.stop().catch(() => {});
        await agent?.stop().catch(() => {});
        await lab?.down();
      });

      test("a fresh bind: Ready, Programmed and Announced True, read back", async (t) => {
        const started = performance.now();
        const ms = await shows("True True True", started);
        const c = await conditions();
        assert.equal(c.get("Ready")?.reason, "Bound");
        assert.equal(c.get("Programmed")?.reason, "ReadBack");
        assert.match(c.get("Announced")?.message ?? "", /192\.168\.18\.100\/32 sent to /);
        t.diagnostic(`all True ${ms.toFixed(0)} ms after the EipBinding was applied`);
      });

      test("the BIRD peer goes down: Announced False (NoEstablishedPeer), True when back", async (t) => {
        await router.birdc(["disable", "node1"]);
        const down = performance.now();
        const broken = await shows("False True False", down);
        const c = await conditions();
        assert.equal(c.get("Announced")?.reason, "NoEstablishedPeer");
        assert.equal(c.get("Ready")?.reason, "NotAnnounced");
        await router.birdc(["enable", "node1"]);
        const up = performance.now();
        const repaired = await shows("True True True", up);
        assert.ok((await events()).includes("NotAnnounced"), "a Warning Event NotAnnounced");
        t.diagnostic(
          `peer down: False after ${broken.toFixed(0)} ms; True ${repaired.toFixed(0)} ms after the peer was enabled`,
        );
      });

      test("our NAT removed behind the agent's back: Programmed False (Missing), True once repaired", async (t) => {
        const ns = lab.nodeNamespace(1);
        const flush =
          v.dataplane === "nftables"
            ? ["nft", "delete", "table", "ip", "kube_eip"]
            : [`iptables-${v.backend}`, "-w", "5", "-t", "nat", "-F", "KUBE-EIP-PREROUTING"];
        await lab.exec(ns, flush);
        const flushed = performance.now();
        const broken = await shows("False False True", flushed);
        const c = await conditions();
        assert.equal(c.get("Programmed")?.reason, "Missing");
        assert.match(
          c.get("Programmed")?.message ?? "",
          v.dataplane === "nftables"
            ? /nftables table ip kube_eip/
            : /-A KUBE-EIP-PREROUTING -d 192\.168\.18\.100\/32 -j DNAT/,
        );
        assert.equal(c.get("Ready")?.reason, "NotProgrammed");
        const repaired = await shows("True True True", flushed);
        assert.ok((await events()).includes("NotProgrammed"), "a Warning Event NotProgrammed");
        t.diagnostic(
          `${flush.join(" ")}: False after ${broken.toFixed(0)} ms; True again ${repaired.toFixed(0)} ms after the flush`,
        );
      });

      test("the agent killed: Ready False (AgentUnavailable), Unknown conditions; True when it is back", async (t) => {
        await agent.kill();
        const killed = performance.now();
        const broken = await shows("False Unknown Unknown", killed);
        const c = await conditions();
        assert.equal(c.get("Ready")?.reason, "AgentUnavailable");
        assert.equal(c.get("Programmed")?.reason, "AgentUnavailable");
        agent = await start();
        const back = performance.now();
        const repaired = await shows("True True True", back);
        assert.ok(
          (await events()).includes("AgentUnavailable"),
          "a Warning Event AgentUnavailable",
        );
        t.diagnostic(
          `agent killed: False after ${broken.toFixed(0)} ms; True ${repaired.toFixed(0)} ms after it was started again`,
        );
      });
    },
  );
}
