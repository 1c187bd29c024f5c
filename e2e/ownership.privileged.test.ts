// Ownership and lost state, in the lab on both iptables backends: a keepalived-style VIP
// and a foreign proxy ARP entry inside the EIP network survive resyncs, restarts, a wiped
// --state-dir and the unbind of a neighbouring EIP; a bind of either is refused and changes
// nothing; a wiped --state-dir stops the agent instead of flushing the node, and
// --recover-from-kernel restores the bindings while a ping through the EIP loses nothing.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { Lab } from "../src/lab/lab.js";
import {
  AGENT_BIN,
  type NodeAgent,
  agentArgs,
  eipctl,
  kernelSnapshot,
  startAgent,
} from "../src/lab/agents.js";
import { labPki } from "../src/lab/lab-tls.js";
import { NEEDS_ROOT, sleep } from "./harness.js";

const EIP_A = "192.168.18.100";
const EIP_B = "192.168.18.101";
const VIP = "192.168.18.150";
const PROXY = "192.168.18.151";

for (const mode of ["nft", "legacy"] as const) {
  describe(`ownership and lost state on iptables-${mode}`, { skip: NEEDS_ROOT }, () => {
    let lab: Lab;
    let agent: NodeAgent;
    let vmiA: string;
    let vmiB: string;
    let dev: string;
    let starts = 0;

    const bind = (eip: string, vmi: string) =>
      eipctl(lab, 1, ["--action", "bind", "--eip-ip", eip, "--vmi-ip", vmi]);
    const unbind = (eip: string, vmi: string) =>
      eipctl(lab, 1, ["--action", "unbind", "--eip-ip", eip, "--vmi-ip", vmi]);
    const outside = () => lab.describe().outside.namespace;
    const start = (extraArgs: string[] = []) =>
      startAgent(lab, 1, { name: `agent-node1-${++starts}`, extraArgs });

    async function foreignState(): Promise<{ vip: boolean; proxy: boolean }> {
      const addr = (await lab.nodeExec(1, ["ip", "-4", "addr", "show", "dev", dev])).stdout;
      const neigh = (await lab.nodeExec(1, ["ip", "neigh", "show", "proxy", "dev", dev])).stdout;
      return {
        vip: addr.includes(`inet ${VIP}/32 `),
        proxy: neigh.split("\n").some((l) => l.trim() === `${PROXY} proxy`),
      };
    }

    before(async () => {
      lab = await Lab.up({ nodes: 1, iptablesModes: mode, removeOnExit: true });
      await labPki(lab); // agentArgs names its certificates
      dev = lab.node(1).gatewayDevice;
      vmiA = (await lab.addVmi("a", 1)).address;
      vmiB = (await lab.addVmi("b", 1)).address;
      // keepalived's VIP and someone's proxy ARP answer, inside --eip-cidr.
      await lab.nodeExec(1, ["ip", "addr", "add", `${VIP}/32`, "dev", dev]);
      await lab.nodeExec(1, ["ip", "neigh", "add", "proxy", PROXY, "dev", dev]);
      agent = await start();
    });

    after(async () => {
      await agent?.stop();
      await lab?.down();
    });

    test("foreign state survives binds, resyncs, an unbind and a restart", async () => {
      assert.equal((await bind(EIP_A, vmiA)).code, 0);
      assert.equal((await bind(EIP_B, vmiB)).code, 0);
      await sleep(2500); // two resyncs (--resync-interval 1)
      assert.deepEqual(await foreignState(), { vip: true, proxy: true });
      assert.equal((await unbind(EIP_B, vmiB)).code, 0);
      assert.deepEqual(await foreignState(), { vip: true, proxy: true });
      await agent.stop();
      agent = await start();
      await sleep(2500);
      assert.deepEqual(await foreignState(), { vip: true, proxy: true });
      assert.equal((await lab.ping(outside(), EIP_A, { count: 3 })).received, 3);
    });

    test("a bind of the foreign VIP, the proxied address or a node address is refused and changes nothing", async () => {
      const kernel = await kernelSnapshot(lab, 1);
      const saved = await readFile(join(agent.stateDir, "bindings.json"), "utf8");
      const cniAddress = lab.node(1).bridgeAddress;
      for (const [eip, vmi, reason] of [
        [VIP, vmiB, /EIP 192\.168\.18\.150 is held by this node on .* not added by kube-eip/],
        [PROXY, vmiB, /proxy ARP entry on .* that kube-eip did not add/],
        [EIP_B, cniAddress, /VMI address .* is an address of this node/],
      ] as const) {
        const rsp = await agent.client.eipOperate({ action: "bind", eipAddr: eip, vmiAddr: vmi });
        assert.equal(rsp.result, "Failed", `${eip} ${vmi}`);
        assert.equal(rsp.errPhase, 0);
        assert.match(rsp.reason, reason);
      }
      assert.deepEqual(await kernelSnapshot(lab, 1), kernel);
      assert.equal(await readFile(join(agent.stateDir, "bindings.json"), "utf8"), saved);
      assert.deepEqual(await foreignState(), { vip: true, proxy: true });
    });

    test("a wiped --state-dir refuses to start and leaves the node as it is", async () => {
      const kernel = await kernelSnapshot(lab, 1);
      await agent.stop();
      await rm(join(agent.stateDir, "bindings.json"));
      await rm(join(agent.stateDir, "bindings.journal"));
      const proc = await lab.spawnIn(
        lab.nodeNamespace(1),
        [process.execPath, AGENT_BIN, ...agentArgs(lab, 1)],
        { name: `agent-node1-${++starts}` },
      );
      const exit = await Promise.race([proc.exited, sleep(20_000).then(() => undefined)]);
      if (exit === undefined) await proc.stop();
      assert.ok(exit !== undefined && exit.code !== 0, "the agent exits non-zero");
      assert.match(proc.output(), /holds no saved bindings, but the kernel's NAT chains hold/);
      assert.match(proc.output(), /--recover-from-kernel/);
      assert.deepEqual(await kernelSnapshot(lab, 1), kernel, "nothing was flushed");
      assert.equal((await lab.ping(outside(), EIP_A, { count: 3 })).received, 3);
    });

    test("--recover-from-kernel restores the bindings, and a ping through the EIP loses nothing", async () => {
      const kernel = await kernelSnapshot(lab, 1);
      const steady = lab.ping(outside(), EIP_A, { count: 300, intervalSec: 0.01, timeoutSec: 1 });
      await sleep(300);
      agent = await start(["--recover-from-kernel"]);
      assert.match(agent.proc.output(), /"msg":"bindings recovered from the kernel's NAT rules"/);
      const held = (await agent.client.listBindings()).bindings.map((b) => [b.eipAddr, b.vmiAddr]);
      assert.deepEqual(held, [[EIP_A, vmiA]]);
      const ping = await steady;
      assert.equal(ping.received, ping.sent, `${ping.sent - ping.received} pings lost`);
      assert.deepEqual(await kernelSnapshot(lab, 1), kernel);
      assert.deepEqual(await foreignState(), { vip: true, proxy: true });
      // Saved again: a plain restart needs no flag.
      await agent.stop();
      agent = await start();
      assert.equal((await agent.client.listBindings()).bindings.length, 1);
    });
  });
}
