// What an address may be, through the real agent on a real node (issue 10, item 1): binds
// that would take over the public gateway, a whole segment or a loopback address are refused
// with the reason and leave the node's whole kernel state and the saved state as they were;
// an agent configured so that such requests could slip through does not start. Once per
// iptables backend.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
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
import { NEEDS_ROOT } from "./harness.js";

const EIP = "192.168.18.100";

/** The saved state, byte for byte (a file that does not exist reads as null). */
async function savedState(dir: string): Promise<Record<string, string | null>> {
  const read = (name: string) => readFile(join(dir, name), "utf8").catch(() => null);
  return { snapshot: await read("bindings.json"), journal: await read("bindings.journal") };
}

for (const mode of ["nft", "legacy"] as const) {
  describe(`request checks on iptables-${mode}`, { skip: NEEDS_ROOT }, () => {
    let lab: Lab;
    let agent: NodeAgent;
    let vmi: string;

    before(async () => {
      lab = await Lab.up({ nodes: 1, iptablesModes: mode, removeOnExit: true });
      await labPki(lab); // agentArgs names its certificates
      vmi = (await lab.addVmi("a", 1)).address;
      agent = await startAgent(lab, 1);
    });

    after(async () => {
      await agent?.stop();
      await lab?.down();
    });

    test("binding the gateway, the EIP network's edges or loopback is refused and changes nothing on the node", async () => {
      const good = await eipctl(lab, 1, ["--action", "bind", "--eip-ip", EIP, "--vmi-ip", vmi]);
      assert.equal(good.code, 0, good.stderr);
      const kernel = await kernelSnapshot(lab, 1);
      const saved = await savedState(agent.stateDir);
      const gateway = lab.topology.routerPublic;
      const cases: [string, string, RegExp][] = [
        [gateway, "10.244.1.50", /EIP 192\.168\.18\.1 is the public gateway \(--gateway-ip\)/],
        ["192.168.18.0", "10.244.1.50", /network address of the EIP network 192\.168\.18\.0\/24/],
        ["192.168.18.255", "10.244.1.50", /broadcast address of the EIP network/],
        ["127.0.0.1", "10.244.1.50", /EIP 127\.0\.0\.1 is a loopback address/],
        ["192.168.18.101", "10.244.0.0", /network address of the internal network 10\.244\.0\.0/],
        ["192.168.18.101", "127.0.0.1", /VMI address 127\.0\.0\.1 is a loopback address/],
      ];
      for (const [eip, vmiAddr, reason] of cases) {
        const r = await eipctl(lab, 1, ["--action", "bind", "--eip-ip", eip, "--vmi-ip", vmiAddr]);
        assert.equal(r.code, 1, `${eip} ${vmiAddr}: ${r.stderr}`);
        assert.match(r.stderr, reason);
        // The seed's wire format, as the operator and old clients send it.
        const rsp = await agent.client.eipOperate({ action: "bind", eipAddr: eip, vmiAddr });
        assert.equal(rsp.result, "Failed");
        assert.equal(rsp.errPhase, 0);
        assert.match(rsp.reason, reason);
      }
      assert.deepEqual(await kernelSnapshot(lab, 1), kernel, "the node's kernel state");
      assert.deepEqual(await savedState(agent.stateDir), saved, "the saved state");
      assert.deepEqual(
        (await agent.client.listBindings()).bindings.map((b) => [b.eipAddr, b.vmiAddr]),
        [[EIP, vmi]],
      );
    });

    test("an agent without --internal-net, or whose --eip-cidr overlaps one, exits 2 with the reason", async () => {
      const alone = lab.stateDir("agent-misconfigured");
      // Were it to start, it would not disturb the running agent (and it is stopped).
      const apart = [
        ...["--state-dir", alone, "--unix-socket", join(alone, "agent.sock")],
        ...["--port", "6128", "--metrics-address", ""],
      ];
      const withoutNets = (args: string[]) =>
        args.filter((a, i) => a !== "--internal-net" && args[i - 1] !== "--internal-net");
      const cases: [string[], RegExp][] = [
        [withoutNets(agentArgs(lab, 1, { extraArgs: apart })), /no --internal-net/],
        [
          agentArgs(lab, 1, { extraArgs: [...apart, "--internal-net", "192.168.0.0/16"] }),
          /--eip-cidr 192\.168\.18\.0\/24 overlaps --internal-net 192\.168\.0\.0\/16/,
        ],
      ];
      for (const [args, reason] of cases) {
        const started = lab.spawnIn(lab.nodeNamespace(1), [process.execPath, AGENT_BIN, ...args], {
          name: "agent-misconfigured",
          waitFor: /"msg":"serving gRPC"/,
          timeoutMs: 20_000,
        });
        const err = await started.then(
          async (proc) => {
            await proc.stop();
            return assert.fail("the agent must not start");
          },
          (e: Error) => e,
        );
        assert.match(err.message, /exited \(code 2,/);
        assert.match(err.message, reason);
      }
    });
  });
}
