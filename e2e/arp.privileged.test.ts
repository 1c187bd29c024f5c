// ARP for EIPs on the public segment (one L2 bridge, no BGP), in both modes: the EIP on the
// gateway device (the kernel answers for its own address) and --arp-poisoning (the kernel
// answers through a proxy entry; the node never holds the EIP). The lab's router is the host
// on the public segment that resolves EIPs by ARP; the outside host behind it sends traffic.
// Each suite runs once per mode and iptables backend.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, eipctl, startAgent } from "../src/lab/agents.js";
import { NEEDS_ROOT, eventually, sleep } from "./harness.js";

const EIP = "192.168.18.100";
const UNBOUND_EIP = "192.168.18.150";
const OUTSIDE_EIP_CIDR = "192.168.19.5";

for (const poisoning of [false, true]) {
  for (const backend of ["nft", "legacy"] as const) {
    const mode = poisoning ? "--arp-poisoning" : "EIP on the gateway device";
    describe(`ARP for EIPs (${mode}, iptables-${backend})`, { skip: NEEDS_ROOT }, () => {
      const extraArgs = poisoning ? ["--arp-poisoning"] : [];
      let lab: Lab;
      let vmi: string;
      const agents = new Map<number, NodeAgent>();

      const router = () => lab.describe().router;
      const outside = () => lab.describe().outside.namespace;
      const agent = (node: number) => agents.get(node) as NodeAgent;
      /** The MACs that answer ARP for `address` on the public segment. */
      const answers = (address: string) =>
        lab.arping(router().namespace, router().publicDevice, address, {
          source: router().publicAddress,
        });
      const operate = async (node: number, action: string, vmiAddr: string) =>
        (await agent(node).client.eipOperate({ action, eipAddr: EIP, vmiAddr })).result;
      /** The router's neighbour entry for the EIP: its MAC, or "". */
      async function routerMac(): Promise<string> {
        const { stdout } = await lab.exec(router().namespace, [
          "ip",
          "-json",
          "neigh",
          "show",
          EIP,
          "dev",
          router().publicDevice,
        ]);
        const entries = JSON.parse(stdout) as { lladdr?: string }[];
        return entries[0]?.lladdr ?? "";
      }
      /** The node's kernel state that makes it answer: addresses, proxy entries, our routes. */
      async function answering(node: number): Promise<string[]> {
        const run = async (argv: string[]) => (await lab.nodeExec(node, argv)).stdout;
        const links = JSON.parse(await run(["ip", "-json", "-4", "addr", "show"])) as {
          ifname: string;
          addr_info: { local: string; prefixlen: number }[];
        }[];
        const addresses = links.flatMap((l) =>
          l.addr_info.map((a) => `${a.local}/${a.prefixlen} on ${l.ifname}`),
        );
        const lines = (text: string) => text.split("\n").map((l) => l.trim());
        return [
          ...addresses,
          ...lines(await run(["ip", "neigh", "show", "proxy"])),
          ...lines(await run(["ip", "route", "show", "table", "main", "proto", "225"])),
        ].filter((l) => l.startsWith(`${EIP} `) || l.startsWith(`${EIP}/`));
      }

      before(async () => {
        lab = await Lab.up({ nodes: 2, iptablesModes: backend, removeOnExit: true });
        vmi = (await lab.addVmi("a", 1)).address;
        for (const node of [1, 2]) agents.set(node, await startAgent(lab, node, { extraArgs }));
      });

      after(async () => {
        for (const a of agents.values()) await a.stop();
        await lab?.down();
      });

      test("the public segment resolves the EIP to the node's gateway device and reaches the VMI", async () => {
        assert.deepEqual(await answers(EIP), [], "nothing answers before the bind");
        assert.equal(await operate(1, "bind", vmi), "Succeed");
        assert.deepEqual(await answers(EIP), [lab.node(1).gatewayMac]);
        assert.ok((await lab.ping(router().namespace, EIP)).replied, "from the public segment");
        assert.equal((await lab.ping(outside(), EIP, { count: 3 })).received, 3, "from outside");
        assert.equal(await routerMac(), lab.node(1).gatewayMac);
        const eth1 = lab.node(1).gatewayDevice;
        assert.deepEqual(
          await answering(1),
          poisoning
            ? [`${EIP} dev ${eth1} proxy proto 225`, `${EIP} dev ${lab.node(1).bridge} scope link`]
            : [`${EIP}/32 on ${eth1}`],
          poisoning ? "the EIP is not an address of the node" : "the EIP is on the gateway device",
        );
      });

      test("nothing answers for an unbound EIP or an address outside --eip-cidr", async () => {
        const refused = await eipctl(lab, 1, [
          "--action",
          "bind",
          "--eip-ip",
          OUTSIDE_EIP_CIDR,
          "--vmi-ip",
          (await lab.addVmi("b", 1)).address,
        ]);
        assert.equal(refused.code, 1);
        const targets = [
          UNBOUND_EIP,
          OUTSIDE_EIP_CIDR,
          vmi,
          lab.node(1).bridgeAddress,
          lab.node(1).mgmtAddress,
        ];
        const results = await Promise.all(targets.map(answers));
        assert.deepEqual(
          Object.fromEntries(targets.map((target, i) => [target, results[i]])),
          Object.fromEntries(targets.map((target) => [target, []])),
        );
        if (poisoning) {
          // Only the gateway device answers: not the management network, where the router
          // is too (the EIP's proxy entry is on the gateway device alone).
          const fromMgmt = await lab.arping(router().namespace, router().mgmtDevice, EIP, {
            source: router().mgmtAddress,
          });
          assert.deepEqual(fromMgmt, []);
        }
      });

      test("with the agent SIGKILLed the EIP is still answered; a restart announces nothing", async () => {
        await agent(1).kill();
        assert.deepEqual(await answers(EIP), [lab.node(1).gatewayMac]);
        assert.ok((await lab.ping(outside(), EIP)).replied);
        const restarted = await startAgent(lab, 1, { extraArgs, name: "agent-node1-restarted" });
        agents.set(1, restarted);
        await sleep(500);
        assert.doesNotMatch(restarted.proc.output(), /gratuitous ARP sent/);
        assert.deepEqual(await answers(EIP), [lab.node(1).gatewayMac]);
      });

      test("the answers come back after the kernel lost them (drift repair)", async () => {
        const dev = lab.node(1).gatewayDevice;
        const lose = poisoning
          ? [
              ["ip", "neigh", "del", "proxy", EIP, "dev", dev],
              ["ip", "route", "del", `${EIP}/32`, "proto", "225"],
            ]
          : [["ip", "addr", "del", `${EIP}/32`, "dev", dev]];
        for (const argv of lose) await lab.nodeExec(1, argv);
        assert.ok(
          await eventually(async () => (await answers(EIP)).length > 0, 5000),
          "answered again",
        );
        assert.deepEqual(await answers(EIP), [lab.node(1).gatewayMac]);
        assert.ok((await lab.ping(outside(), EIP)).replied);
      });

      test("a binding moved to node 2 moves the router's neighbour entry within a second", async (t) => {
        await lab.removeVmi("b");
        await sleep(1100); // past the neighbour entry's locktime, as in a real site
        assert.equal(await routerMac(), lab.node(1).gatewayMac);
        const steady = lab.ping(outside(), EIP, { count: 300, intervalSec: 0.01, timeoutSec: 1 });
        await sleep(500);
        const moved = await lab.moveVmi("a", 2);
        assert.equal(await operate(2, "bind", moved), "Succeed");
        const bound = Date.now();
        assert.equal(await operate(1, "unbind", vmi), "Succeed");
        vmi = moved;
        let followedMs = -1;
        while (Date.now() - bound < 3000) {
          if ((await routerMac()) === lab.node(2).gatewayMac) {
            followedMs = Date.now() - bound;
            break;
          }
          await sleep(10);
        }
        const result = await steady;
        t.diagnostic(`router's entry followed the EIP ${followedMs} ms after the bind on node 2`);
        t.diagnostic(
          `pings lost during the move: ${result.sent - result.received} of ${result.sent} (10 ms apart)`,
        );
        assert.ok(
          followedMs >= 0 && followedMs <= 1000,
          `the router's entry moved after ${followedMs} ms`,
        );
        assert.ok(result.received > 0);
        assert.deepEqual(await answers(EIP), [lab.node(2).gatewayMac], "only node 2 answers");
        assert.deepEqual(await answering(1), []);
        assert.ok((await lab.ping(outside(), EIP)).replied, "the EIP answers from node 2");
      });

      test("unbind stops the answers", async () => {
        assert.equal(await operate(2, "unbind", vmi), "Succeed");
        assert.deepEqual(await answering(2), []);
        assert.deepEqual(await answers(EIP), []);
        assert.equal((await lab.ping(outside(), EIP)).replied, false);
      });
    });
  }
}
