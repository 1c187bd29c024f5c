// No packet of a binding passes un-NATed: on the iptables dataplane a VMI's packets are let
// through (FORWARD, our SNAT chain) by its member of kube-eip-vmi, packets to an EIP by its
// member of kube-eip-eip and by its address on the gateway device, so after every command
// the agent runs, each of those must have its NAT rule (src/kernel/iptables-dataplane.ts,
// the gates of src/agent/dataplane.ts). The whole agent, with its apply loop's batches at
// once, over SimKernel; binds, unbinds, an EIP given to another VMI.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { pino } from "pino";
import { AgentClient } from "../common/agent-api.js";
import { freePort } from "../common/free-port.js";
import type { RunResult } from "../kernel/runner.js";
import { SimKernel } from "../kernel/sim-kernel.js";
import { CHAIN_POSTROUTING, CHAIN_PREROUTING, SET_EIP, SET_VMI } from "../model/desired.js";
import { type RunningAgent, startAgent } from "./agent.js";
import { parseAgentArgs } from "./config.js";

/** SimKernel that checks, after each command, that every gate has its NAT rule. */
class GateCheckingKernel extends SimKernel {
  readonly unNated: string[] = [];

  override async run(
    command: string,
    args: readonly string[],
    options?: { input?: string },
  ): Promise<RunResult> {
    // The NAT writes take their time, as iptables-restore does with a big ruleset, so a
    // write that runs beside them (the ipsets, the addresses) lands first.
    if (command.endsWith("-restore") || command === "nft") {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    try {
      return await super.run(command, args, options);
    } finally {
      const nat = this.tables.get("nat");
      const rules = (chain: string) => nat?.get(chain)?.rules.map((r) => r.spec) ?? [];
      const snat = rules(CHAIN_POSTROUTING);
      const dnat = rules(CHAIN_PREROUTING);
      const after = `${command} ${args.join(" ")}`;
      for (const vmi of this.sets.get(SET_VMI)?.members ?? []) {
        if (!snat.some((r) => r.startsWith(`-s ${vmi}/32 `) && r.includes("-j SNAT")))
          this.unNated.push(`after ${after}: ${vmi} is in ${SET_VMI} without its SNAT rule`);
      }
      for (const eip of this.sets.get(SET_EIP)?.members ?? []) {
        if (!dnat.some((r) => r.startsWith(`-d ${eip}/32 -j DNAT`)))
          this.unNated.push(`after ${after}: ${eip} is in ${SET_EIP} without its DNAT rule`);
      }
      // An EIP's address on the gateway device: the node answers ARP for it, and delivers a
      // packet that is not DNATed to itself (a reset for a connection picked up mid-stream).
      for (const { dev, address } of this.ip.addresses) {
        if (dev !== "eth1" || !/^192\.168\.18\.1\d\d$/.test(address)) continue;
        if (!dnat.some((r) => r.startsWith(`-d ${address}/32 -j DNAT`)))
          this.unNated.push(`after ${after}: ${address} is on ${dev} without its DNAT rule`);
      }
    }
  }
}

let dir: string;
let sim: GateCheckingKernel;
let agent: RunningAgent;
let client: AgentClient;

before(async () => {
  dir = await mkdtemp(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "keip-gates-"));
  sim = new GateCheckingKernel();
  for (const dev of ["lo", "eth0", "eth1", "cni0"]) sim.ip.links.add(dev);
  const config = parseAgentArgs([
    ...["--gateway-ip", "192.168.18.1", "--gateway-dev", "eth1"],
    ...["--eip-cidr", "192.168.18.0/24", "--internal-net", "10.0.0.0/8", "--cni-dev", "cni0"],
    ...["--state-dir", join(dir, "state"), "--seed-state-dir", join(dir, "seed")],
    ...["--rt-tables", join(dir, "rt_tables"), "--iptables-mode", "nft", "--garp-count", "0"],
    ...[
      "--listen-address",
      "127.0.0.1",
      "--port",
      String(await freePort()),
      "--metrics-address",
      "",
    ],
    ...["--resync-interval", "3600"],
  ]);
  agent = await startAgent(config, { runner: sim, logger: pino({ level: "silent" }) });
  client = new AgentClient(`127.0.0.1:${agent.grpcPort}`);
});

after(async () => {
  client.close();
  await agent?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function operate(action: "bind" | "unbind", eip: string, vmi: string): Promise<void> {
  const rsp = await client.eipOperate({ action, eipAddr: eip, vmiAddr: vmi });
  assert.equal(rsp.result, "Succeed", `${action} ${eip} ${vmi}: ${rsp.reason}`);
}

const eip = (i: number) => `192.168.18.${100 + i}`;
const vmi = (i: number) => `10.0.1.${10 + i}`;

test("every member of our sets has its NAT rule after each command, through binds, moves and unbinds", async () => {
  await operate("bind", eip(0), vmi(0));
  // Binds arriving together share the loop's next apply, whose batches run at once.
  await Promise.all([1, 2, 3, 4, 5].map((i) => operate("bind", eip(i), vmi(i))));
  // EIP 0 given to another VMI: its old member goes before its rules, the new one after.
  await operate("unbind", eip(0), vmi(0));
  await operate("bind", eip(0), vmi(9));
  await Promise.all([1, 2, 3].map((i) => operate("unbind", eip(i), vmi(i))));
  await Promise.all([
    operate("unbind", eip(4), vmi(4)),
    operate("bind", eip(1), vmi(1)),
    operate("bind", eip(6), vmi(6)),
  ]);
  assert.deepEqual(sim.unNated, []);
  // And what is bound is whole: each held VMI and EIP is a member, each with its rules.
  const members = (set: string) => [...(sim.sets.get(set)?.members ?? [])].sort();
  assert.deepEqual(members(SET_VMI), [vmi(1), vmi(5), vmi(6), vmi(9)].sort());
  assert.deepEqual(members(SET_EIP), [eip(0), eip(1), eip(5), eip(6)].sort());
  assert.deepEqual(sim.violations, []);
});
