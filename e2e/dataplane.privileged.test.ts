// The agent's dataplane on a real kernel: a lab site (router, outside host, two nodes with
// FORWARD policy DROP, a pod, VMIs), a real eip_agent per test suite, real traffic. The
// whole suite runs once per iptables backend with the iptables dataplane, and once with the
// nftables dataplane (whose one iptables rule goes to the nft backend).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Lab } from "../src/lab/lab.js";
import {
  type Dataplane,
  type NodeAgent,
  eipctl,
  kernelSnapshot,
  startAgent,
} from "../src/lab/agents.js";
import { JUMPS, NFT_FORWARD_JUMP } from "../src/model/plan.js";
import { NEEDS_ROOT, eventually, whoami as whoamiIn } from "./harness.js";

const EIP_A = "192.168.18.100";
const EIP_B = "192.168.18.101";
const PORT_A = 8080;
const PORT_B = 8081;
const OUTSIDE_PORT = 9090;
const POD_PORT = 7070;

/** What the tests break and plant in each dataplane's own kernel state. */
interface Breaker {
  /** Loses the NAT of `eip` and a forward accept of `vmi`. */
  drift(lab: Lab, eip: string, vmi: string): Promise<void>;
  /** Flushes all of our NAT and forward state. */
  flush(lab: Lab): Promise<void>;
  /** Plants a binding nobody wants: EIP 192.168.18.200 to 10.244.1.200. */
  plantStray(lab: Lab): Promise<void>;
  /** The snapshot field holding the NAT. */
  readonly natField: "iptables" | "nftables";
}

function breaker(dataplane: Dataplane, mode: "nft" | "legacy"): Breaker {
  const ipt = `iptables-${mode}`;
  const node = (lab: Lab, argv: string[]) => lab.nodeExec(1, argv);
  if (dataplane === "nftables") {
    const nft = (lab: Lab, ...argv: string[]) => node(lab, ["nft", ...argv]);
    return {
      natField: "nftables",
      async drift(lab, eip, vmi) {
        await nft(lab, "delete", "element", "ip", "kube_eip", "eip_vmi", `{ ${eip} }`);
        await nft(lab, "delete", "element", "ip", "kube_eip", "vmis", `{ ${vmi} }`);
      },
      async flush(lab) {
        for (const map of ["eip_vmi", "vmi_eip"])
          await nft(lab, "flush", "map", "ip", "kube_eip", map);
        for (const set of ["eips", "vmis"]) await nft(lab, "flush", "set", "ip", "kube_eip", set);
        await nft(lab, "flush", "chain", "ip", "kube_eip", "forward");
        await node(lab, [ipt, "-D", "FORWARD", ...splitRule(NFT_FORWARD_JUMP.rule)]);
      },
      async plantStray(lab) {
        const elem = "{ 192.168.18.200 : 10.244.1.200 }";
        await nft(lab, "add", "element", "ip", "kube_eip", "eip_vmi", elem);
      },
    };
  }
  return {
    natField: "iptables",
    async drift(lab, _eip, vmi) {
      await node(lab, [ipt, "-t", "nat", "-F", "KUBE-EIP-PREROUTING"]);
      await node(lab, ["ipset", "del", "kube-eip-vmi", vmi]);
    },
    async flush(lab) {
      await node(lab, [ipt, "-t", "nat", "-F", "KUBE-EIP-PREROUTING"]);
      await node(lab, [ipt, "-t", "nat", "-F", "KUBE-EIP-POSTROUTING"]);
      await node(lab, [ipt, "-t", "filter", "-F", "KUBE-EIP-FORWARD"]);
      const vmiAccept = JUMPS.find((j) => j.chain === "FORWARD" && j.rule.endsWith("-j ACCEPT"));
      await node(lab, [ipt, "-D", "FORWARD", ...(vmiAccept?.rule.split(" ") ?? [])]);
      await node(lab, ["ipset", "flush", "kube-eip-eip"]);
      await node(lab, ["ipset", "flush", "kube-eip-vmi"]);
    },
    async plantStray(lab) {
      await node(lab, ["ipset", "add", "kube-eip-eip", "192.168.18.200"]);
      await node(lab, [
        ipt,
        "-t",
        "nat",
        "-A",
        "KUBE-EIP-PREROUTING",
        "-d",
        "192.168.18.200/32",
        "-j",
        "DNAT",
        "--to-destination",
        "10.244.1.200",
      ]);
    },
  };
}

/** An iptables-save rule as arguments (its one quoted comment kept whole). */
function splitRule(rule: string): string[] {
  return (rule.match(/"[^"]*"|\S+/g) ?? []).map((a) => a.replace(/^"(.*)"$/, "$1"));
}

const RUNS = [
  { mode: "nft", dataplane: "iptables" },
  { mode: "legacy", dataplane: "iptables" },
  { mode: "nft", dataplane: "nftables" },
] as const;

for (const { mode, dataplane } of RUNS) {
  const breaks = breaker(dataplane, mode);
  describe(`dataplane ${dataplane} on iptables-${mode}`, { skip: NEEDS_ROOT }, () => {
    let lab: Lab;
    let agent: NodeAgent;
    let vmiA: string;
    let vmiB: string;
    let idle: Record<string, string>;

    const bind = (eip: string, vmi: string) =>
      eipctl(lab, 1, ["--action", "bind", "--eip-ip", eip, "--vmi-ip", vmi]);
    const unbind = (eip: string, vmi: string) =>
      eipctl(lab, 1, ["--action", "unbind", "--eip-ip", eip, "--vmi-ip", vmi]);
    const outside = () => lab.describe().outside.namespace;
    const whoami = (fromNs: string, addr: string, port: number) =>
      whoamiIn(lab, fromNs, addr, port);

    before(async () => {
      lab = await Lab.up({ nodes: 2, iptablesModes: mode, removeOnExit: true });
      vmiA = (await lab.addVmi("a", 1)).address;
      vmiB = (await lab.addVmi("b", 1)).address;
      // Each answers a connection with the source address it sees; stopped by lab.down().
      await lab.startTcpServer(lab.vmiNamespace("a"), PORT_A);
      await lab.startTcpServer(lab.vmiNamespace("b"), PORT_B);
      await lab.startTcpServer(outside(), OUTSIDE_PORT);
      await lab.startTcpServer(lab.pod().namespace, POD_PORT);
      agent = await startAgent(lab, 1, { dataplane });
      idle = await kernelSnapshot(lab, 1);
    });

    after(async () => {
      await agent?.stop();
      await lab?.down();
    });

    test("the agent picks the backend that holds the node's rules", () => {
      assert.match(agent.proc.output(), new RegExp(`"mode":"${mode}","requested":"auto"`));
    });

    test("from the outside, the EIP reaches the VMI (ICMP and TCP) and the VMI sees the real source", async () => {
      assert.equal(
        (await lab.ping(outside(), EIP_A)).replied,
        false,
        "nothing answers before the bind",
      );
      const r = await bind(EIP_A, vmiA);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await lab.ping(outside(), EIP_A, { count: 3 })).received, 3);
      assert.equal(await whoami(outside(), EIP_A, PORT_A), lab.topology.outside);
      // Only this run's dataplane holds the NAT.
      const snap = await kernelSnapshot(lab, 1);
      if (dataplane === "nftables") {
        assert.match(snap.nftables ?? "", new RegExp(`${EIP_A} : ${vmiA}`));
        assert.doesNotMatch(snap.iptables ?? "", /KUBE-EIP|kube-eip-|k8s_internal_net/);
        assert.doesNotMatch(snap.ipset ?? "", /kube-eip-|k8s_internal_net/);
      } else {
        assert.equal(snap.nftables, "");
        assert.match(snap.iptables ?? "", new RegExp(`-d ${EIP_A}/32 -j DNAT`));
      }
    });

    test("from the VMI, the outside sees the EIP; a pod on another node and a service see the VMI", async () => {
      assert.equal(await whoami(lab.vmiNamespace("a"), lab.topology.outside, OUTSIDE_PORT), EIP_A);
      assert.equal(await whoami(lab.vmiNamespace("a"), lab.pod().address, POD_PORT), vmiA);
      assert.equal(
        await whoami(lab.vmiNamespace("a"), lab.topology.serviceAddress, POD_PORT),
        vmiA,
      );
    });

    test("two VMIs with two EIPs on one node do not interfere; unbinding one leaves the other", async () => {
      assert.equal((await bind(EIP_B, vmiB)).code, 0);
      assert.equal(await whoami(outside(), EIP_B, PORT_B), lab.topology.outside);
      assert.equal(
        await whoami(outside(), EIP_B, PORT_A),
        undefined,
        "EIP B does not lead to VMI A",
      );
      assert.equal(await whoami(lab.vmiNamespace("b"), lab.topology.outside, OUTSIDE_PORT), EIP_B);
      assert.equal(await whoami(lab.vmiNamespace("a"), lab.topology.outside, OUTSIDE_PORT), EIP_A);

      assert.equal((await unbind(EIP_A, vmiA)).code, 0);
      assert.equal(await whoami(outside(), EIP_A, PORT_A), undefined);
      assert.equal((await lab.ping(outside(), EIP_A)).replied, false);
      assert.equal(await whoami(outside(), EIP_B, PORT_B), lab.topology.outside);
      assert.equal(await whoami(lab.vmiNamespace("b"), lab.topology.outside, OUTSIDE_PORT), EIP_B);
    });

    test("after unbind the kernel holds no trace of the binding", async () => {
      assert.equal((await unbind(EIP_B, vmiB)).code, 0);
      assert.deepEqual(await kernelSnapshot(lab, 1), idle);
      assert.equal((await unbind(EIP_B, vmiB)).code, 0, "unbind again: still a success");
      assert.deepEqual(await kernelSnapshot(lab, 1), idle);
    });

    test("bad input is refused with a reason and changes neither the kernel nor the saved state", async () => {
      assert.equal((await bind(EIP_A, vmiA)).code, 0);
      const kernel = await kernelSnapshot(lab, 1);
      const saved = await readFile(join(agent.stateDir, "bindings.json"), "utf8");
      const cases: [string[], RegExp][] = [
        [
          ["--action", "bind", "--eip-ip", "192.168.18.300", "--vmi-ip", vmiB],
          /not an IPv4 address/,
        ],
        [["--action", "bind", "--eip-ip", "2001:db8::1", "--vmi-ip", vmiB], /not an IPv4 address/],
        [
          ["--action", "bind", "--eip-ip", "192.168.19.5", "--vmi-ip", vmiB],
          /outside the EIP network/,
        ],
        [
          ["--action", "bind", "--eip-ip", EIP_B, "--vmi-ip", "172.16.5.5"],
          /none of the internal networks/,
        ],
        [["--action", "bind", "--eip-ip", EIP_A, "--vmi-ip", vmiB], /already bound to VMI/],
        [["--action", "bind", "--eip-ip", EIP_B, "--vmi-ip", vmiA], /already holds EIP/],
        [["--action", "unbind", "--eip-ip", EIP_A, "--vmi-ip", vmiB], /bound to VMI .*, not/],
      ];
      for (const [args, reason] of cases) {
        const r = await eipctl(lab, 1, args);
        assert.equal(r.code, 1, args.join(" "));
        assert.match(r.stderr, reason);
      }
      const seedClient = await agent.client.eipOperate({
        action: "attach",
        eipAddr: EIP_B,
        vmiAddr: vmiB,
      });
      assert.equal(seedClient.result, "Failed");
      assert.equal(seedClient.errPhase, 0);
      assert.deepEqual(await kernelSnapshot(lab, 1), kernel);
      assert.equal(await readFile(join(agent.stateDir, "bindings.json"), "utf8"), saved);
      assert.equal(
        await whoami(outside(), EIP_A, PORT_A),
        lab.topology.outside,
        "the good binding still carries traffic",
      );
    });

    test("drift under a running agent is repaired within the resync interval", async () => {
      const bound = await kernelSnapshot(lab, 1);
      await breaks.drift(lab, EIP_A, vmiA);
      await lab.nodeExec(1, ["ip", "rule", "del", "from", vmiA, "priority", "1001"]);
      await lab.nodeExec(1, ["ip", "addr", "del", `${EIP_A}/32`, "dev", "eth1"]);
      assert.notDeepEqual(await kernelSnapshot(lab, 1), bound);
      assert.ok(
        await eventually(
          async () => JSON.stringify(await kernelSnapshot(lab, 1)) === JSON.stringify(bound),
          5000,
          200,
        ),
        "repaired",
      );
      assert.match(agent.proc.output(), /"msg":"repaired kernel state that had drifted"/);
      assert.equal(await whoami(outside(), EIP_A, PORT_A), lab.topology.outside);
    });

    test("after SIGKILL and a flush of our chains, sets, rules and addresses, a restarted agent restores every binding", async () => {
      assert.equal((await bind(EIP_B, vmiB)).code, 0);
      const bound = await kernelSnapshot(lab, 1);
      await agent.kill();
      await breaks.flush(lab);
      for (const vmi of [vmiA, vmiB])
        await lab.nodeExec(1, ["ip", "rule", "del", "from", vmi, "priority", "1001"]);
      await lab.nodeExec(1, ["ip", "route", "flush", "table", "1001"]);
      await lab.nodeExec(1, ["ip", "addr", "flush", "dev", "eth1"]);
      assert.equal(await whoami(outside(), EIP_A, PORT_A), undefined, "the flush broke the EIPs");

      agent = await startAgent(lab, 1, { dataplane, name: "agent-node1-restarted" });
      assert.deepEqual(await kernelSnapshot(lab, 1), bound);
      assert.equal(await whoami(outside(), EIP_A, PORT_A), lab.topology.outside);
      assert.equal(await whoami(outside(), EIP_B, PORT_B), lab.topology.outside);
      const listed = await agent.client.listBindings();
      assert.deepEqual(
        listed.bindings.map((b) => [b.eipAddr, b.vmiAddr]),
        [
          [EIP_A, vmiA],
          [EIP_B, vmiB],
        ],
      );
      assert.equal(listed.inSync, true);
    });

    test("a restarted agent removes kernel state of ours that no binding wants, and only that", async () => {
      await agent.kill();
      // Left behind by something else that was ours (an agent that crashed mid-way, say).
      await breaks.plantStray(lab);
      await lab.nodeExec(1, [
        "ip",
        "rule",
        "add",
        "from",
        "10.244.1.200",
        "lookup",
        "1001",
        "priority",
        "1001",
      ]);
      // With our mark (the label eth1:eip): an address without it is someone else's.
      await lab.nodeExec(1, [
        "ip",
        "addr",
        "add",
        "192.168.18.200/32",
        "dev",
        "eth1",
        "label",
        "eth1:eip",
      ]);
      // Not ours: the node's own address on the public segment and a rule of someone else.
      await lab.nodeExec(1, ["ip", "addr", "add", "192.168.18.11/24", "dev", "eth1"]);
      await lab.nodeExec(1, [
        "ip",
        "rule",
        "add",
        "from",
        "10.244.1.201",
        "lookup",
        "main",
        "priority",
        "1002",
      ]);
      agent = await startAgent(lab, 1, { dataplane, name: "agent-node1-cleanup" });
      const snap = await kernelSnapshot(lab, 1);
      assert.doesNotMatch(snap[breaks.natField] ?? "", /192\.168\.18\.200/);
      assert.doesNotMatch(snap.ipset ?? "", /192\.168\.18\.200/);
      assert.doesNotMatch(snap.rules ?? "", /10\.244\.1\.200/);
      assert.doesNotMatch(snap.addresses ?? "", /192\.168\.18\.200/);
      assert.match(snap.addresses ?? "", /192\.168\.18\.11\/24/);
      assert.match(snap.rules ?? "", /1002:\s+from 10\.244\.1\.201 lookup main/);
      assert.equal(await whoami(outside(), EIP_A, PORT_A), lab.topology.outside);
      await lab.nodeExec(1, ["ip", "addr", "del", "192.168.18.11/24", "dev", "eth1"]);
      await lab.nodeExec(1, ["ip", "rule", "del", "priority", "1002"]);
    });

    test("metrics report bindings held, applies and drift repairs", async () => {
      const script = `fetch("http://${lab.node(1).mgmtAddress}:9127/metrics").then(r => r.text()).then(t => process.stdout.write(t))`;
      const { stdout } = await lab.nodeExec(1, [process.execPath, "-e", script]);
      assert.match(stdout, /^kube_eip_agent_bindings 2$/m);
      assert.match(stdout, /^kube_eip_agent_dataplane_in_sync 1$/m);
      assert.match(stdout, /^kube_eip_agent_apply_duration_seconds_count [1-9]/m);
      assert.match(stdout, /^kube_eip_agent_drift_repairs_total /m);
      assert.match(stdout, /^process_resident_memory_bytes /m);
    });
  });
}
