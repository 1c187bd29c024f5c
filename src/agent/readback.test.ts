// The read-back as ListBindings shows it: the whole agent (startAgent) over SimKernel, a
// strict model of the node's kernel. A fresh bind is read back at once; state removed
// behind the agent's back turns the bindings it belongs to (and only those) Programmed
// False with what is missing, the loop rewrites it, and a later read-back finds it whole.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import { freePort } from "../common/free-port.js";
import { AgentClient, type BindingInfo } from "../common/agent-api.js";
import { SimKernel } from "../kernel/sim-kernel.js";
import { TEST_BINDINGS } from "../model/test-plan-config.js";
import { type RunningAgent, startAgent } from "./agent.js";
import { parseAgentArgs } from "./config.js";

const [A, B] = TEST_BINDINGS as [{ eip: string; vmi: string }, { eip: string; vmi: string }];

async function start(sim: SimKernel, dir: string, arp: boolean) {
  const port = String(await freePort());
  const config = parseAgentArgs([
    ...["--gateway-ip", "192.168.18.1", "--gateway-dev", "eth1"],
    ...["--eip-cidr", "192.168.18.0/24", "--internal-net", "10.0.0.0/8", "--cni-dev", "cni0"],
    ...["--state-dir", join(dir, "state"), "--seed-state-dir", join(dir, "seed")],
    ...["--rt-tables", join(dir, "rt_tables"), "--iptables-mode", "nft", "--garp-count", "0"],
    ...["--listen-address", "127.0.0.1", "--port", port, "--metrics-address", ""],
    ...["--resync-interval", "3600", ...(arp ? ["--arp-poisoning"] : [])],
  ]);
  const agent = await startAgent(config, { runner: sim, logger: pino({ level: "silent" }) });
  return { agent, client: new AgentClient(`127.0.0.1:${agent.grpcPort}`) };
}

function newSim(): SimKernel {
  const sim = new SimKernel();
  for (const dev of ["lo", "eth0", "eth1", "cni0"]) sim.ip.links.add(dev);
  return sim;
}

async function listed(client: AgentClient, eipAddr = ""): Promise<BindingInfo[]> {
  return (await client.listBindings(5000, { eipAddr })).bindings;
}

/** The bindings once no read-back is outstanding (the one after an apply runs at once). */
async function settled(client: AgentClient): Promise<BindingInfo[]> {
  for (let i = 0; i < 200; i++) {
    const bindings = await listed(client);
    if (bindings.every((b) => b.programmed?.reason !== "NotReadBack")) return bindings;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail("the read-back after the bind never came");
}

function conditions(b: BindingInfo | undefined): string {
  return `${b?.programmed?.status}/${b?.programmed?.reason} ${b?.announced?.status}/${b?.announced?.reason}`;
}

for (const arp of [false, true]) {
  describe(`read-back ${arp ? "with --arp-poisoning" : "with the EIP on the gateway device"}`, () => {
    let dir: string;
    let sim: SimKernel;
    let agent: RunningAgent;
    let client: AgentClient;

    before(async () => {
      dir = await mkdtemp(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "keip-rb-"));
      sim = newSim();
      ({ agent, client } = await start(sim, dir, arp));
      for (const b of [A, B]) {
        const rsp = await client.eipOperate({ action: "bind", eipAddr: b.eip, vmiAddr: b.vmi });
        assert.equal(rsp.result, "Succeed", rsp.reason);
      }
    });

    after(async () => {
      client.close();
      await agent.stop();
      await rm(dir, { recursive: true, force: true });
    });

    test("a fresh bind is read back at once: Programmed and Announced (ARP) True", async () => {
      const bindings = await settled(client);
      assert.deepEqual(
        bindings.map((b) => [b.eipAddr, conditions(b)]),
        [
          [A.eip, "True/ReadBack True/ArpAnswered"],
          [B.eip, "True/ReadBack True/ArpAnswered"],
        ],
      );
      assert.ok(Date.parse(bindings[0]?.readBackAt ?? "") > 0, "the time of the read-back");
    });

    test("the eipAddr filter lists one binding, or none", async () => {
      assert.deepEqual(
        (await listed(client, B.eip)).map((b) => b.eipAddr),
        [B.eip],
      );
      assert.deepEqual(await listed(client, "192.168.18.77"), []);
    });

    test("a rule removed behind the agent's back: that binding only, until a read-back finds it whole", async () => {
      const chain = sim.tables.get("nat")?.get("KUBE-EIP-PREROUTING");
      assert.ok(chain);
      // A's DNAT rule goes; B's (whose VMI 10.0.0.11 starts with A's 10.0.0.1) stays.
      chain.rules = chain.rules.filter((r) => !r.spec.includes(A.eip));
      await agent.dataplane.backgroundResync();
      const [a, b] = await listed(client);
      assert.equal(conditions(a), `False/Missing True/ArpAnswered`);
      assert.match(
        a?.programmed?.message ?? "",
        /-A KUBE-EIP-PREROUTING -d 192\.168\.18\.100\/32 -j DNAT/,
      );
      assert.match(a?.programmed?.message ?? "", /rewritten at /);
      assert.equal(conditions(b), "True/ReadBack True/ArpAnswered");
      assert.ok(
        sim.tables
          .get("nat")
          ?.get("KUBE-EIP-PREROUTING")
          ?.rules.some((r) => r.spec.includes(A.eip)),
        "the loop rewrote the rule",
      );
      await agent.dataplane.backgroundResync();
      assert.equal(conditions((await listed(client))[0]), "True/ReadBack True/ArpAnswered");
    });

    test("a jump every binding needs removed: every binding False", async () => {
      const prerouting = sim.tables.get("nat")?.get("PREROUTING");
      assert.ok(prerouting);
      prerouting.rules = prerouting.rules.filter((r) => !r.spec.includes("KUBE-EIP-PREROUTING"));
      await agent.dataplane.backgroundResync();
      const all = await listed(client);
      assert.deepEqual(
        all.map((b) => b.programmed?.reason),
        ["Missing", "Missing"],
      );
      assert.match(
        all[1]?.programmed?.message ?? "",
        /-A PREROUTING -m set --match-set kube-eip-eip dst/,
      );
      await agent.dataplane.backgroundResync();
      assert.deepEqual(
        (await listed(client)).map((b) => b.programmed?.status),
        ["True", "True"],
      );
    });

    test("the ARP answer removed: Programmed and Announced False for that EIP", async () => {
      if (arp)
        sim.ip.proxies.splice(
          0,
          sim.ip.proxies.length,
          ...sim.ip.proxies.filter((p) => p.address !== B.eip),
        );
      else
        sim.ip.addresses.splice(
          0,
          sim.ip.addresses.length,
          ...sim.ip.addresses.filter((x) => x.address !== B.eip),
        );
      await agent.dataplane.backgroundResync();
      const [a, b] = await listed(client);
      assert.equal(conditions(a), "True/ReadBack True/ArpAnswered");
      assert.equal(conditions(b), "False/Missing False/NotAnswered");
      assert.match(
        b?.announced?.message ?? "",
        arp ? /proxy ARP entry 192\.168\.18\.101 on eth1/ : /address 192\.168\.18\.101\/32 on eth1/,
      );
      await agent.dataplane.backgroundResync();
      assert.equal(conditions((await listed(client))[1]), "True/ReadBack True/ArpAnswered");
    });
  });
}
