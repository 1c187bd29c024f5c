// An EIP does not bypass the cluster's network policy: a bound VMI's traffic to pods and
// services still meets the CNI's chains, which sit after ours in FORWARD, while its EIP
// traffic (inbound DNAT, outbound SNAT) flows. The lab's nodes are such a cluster: FORWARD
// policy DROP and a CNI chain (LAB-CNI-FORWARD) that accepts only in-cluster traffic. Once
// per iptables backend, with a real agent and real traffic. And what the other backend
// holds that drops EIP traffic is reported at start.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, eipctl, startAgent } from "../src/lab/agents.js";
import { CNI_FORWARD_CHAIN } from "../src/lab/topology.js";
import { NEEDS_ROOT, eventually, whoami as whoamiIn } from "./harness.js";

const EIP = "192.168.18.110";
const VMI_PORT = 8080;
const OUTSIDE_PORT = 9090;
const POD_PORT = 7070;

/** The rule the seed (and kube-eip before this) kept at the top of FORWARD. */
const UNCONDITIONAL_ACCEPT = "-m set --match-set kube-eip-vmi src -j ACCEPT".split(" ");

for (const mode of ["nft", "legacy"] as const) {
  describe(`network policy with an EIP bound, on iptables-${mode}`, { skip: NEEDS_ROOT }, () => {
    let lab: Lab;
    let agent: NodeAgent;
    let vmi: string;
    let dropRule: string[];

    const ipt = (args: readonly string[]) => lab.nodeExec(1, [`iptables-${mode}`, ...args]);
    const outside = () => lab.describe().outside.namespace;
    const whoami = (fromNs: string, addr: string, port: number) =>
      whoamiIn(lab, fromNs, addr, port);

    before(async () => {
      lab = await Lab.up({ nodes: 2, iptablesModes: mode, removeOnExit: true });
      vmi = (await lab.addVmi("a", 1)).address;
      await lab.startTcpServer(lab.vmiNamespace("a"), VMI_PORT);
      await lab.startTcpServer(outside(), OUTSIDE_PORT);
      await lab.startTcpServer(lab.pod().namespace, POD_PORT);
      // As a CNI's policy writes it: in its own chain, reached from FORWARD after ours.
      dropRule = [
        CNI_FORWARD_CHAIN,
        "-s",
        `${vmi}/32`,
        "-d",
        `${lab.pod().address}/32`,
        "-j",
        "DROP",
      ];
      agent = await startAgent(lab, 1);
      const r = await eipctl(lab, 1, ["--action", "bind", "--eip-ip", EIP, "--vmi-ip", vmi]);
      assert.equal(r.code, 0, r.stderr);
    });

    after(async () => {
      await agent?.stop();
      await lab?.down();
    });

    test("the node drops forwarded traffic by default and its CNI accepts only in-cluster traffic", async () => {
      const forward = (await ipt(["-S", "FORWARD"])).stdout;
      assert.match(forward, /^-P FORWARD DROP$/m);
      assert.match(forward, new RegExp(`^-A FORWARD -j ${CNI_FORWARD_CHAIN}$`, "m"));
      assert.equal(await whoami(lab.vmiNamespace("a"), lab.pod().address, POD_PORT), vmi);
    });

    test("a CNI DROP for VMI-to-pod traffic still drops it while the VMI holds an EIP", async () => {
      await ipt(["-I", ...dropRule.slice(0, 1), "1", ...dropRule.slice(1)]);
      assert.equal(await whoami(lab.vmiNamespace("a"), lab.pod().address, POD_PORT), undefined);
      assert.equal(
        await whoami(lab.vmiNamespace("a"), lab.topology.serviceAddress, POD_PORT),
        undefined,
        "through the service address too",
      );
    });

    test("the EIP's traffic still flows: inbound DNAT and outbound SNAT", async () => {
      assert.equal(await whoami(outside(), EIP, VMI_PORT), lab.topology.outside);
      assert.equal((await lab.ping(outside(), EIP, { count: 2 })).received, 2);
      assert.equal(await whoami(lab.vmiNamespace("a"), lab.topology.outside, OUTSIDE_PORT), EIP);
    });

    test("the seed's unconditional FORWARD accept, found on the node, is removed", async () => {
      // The seed's set it names (the iptables dataplane's own; on nftables, as a node the
      // seed ran would have it).
      const sets = (await lab.nodeExec(1, ["ipset", "list", "-n"])).stdout.split("\n");
      if (!sets.includes("kube-eip-vmi")) {
        await lab.nodeExec(1, ["ipset", "create", "kube-eip-vmi", "hash:ip"]);
      }
      await ipt(["-I", "FORWARD", "1", ...UNCONDITIONAL_ACCEPT]);
      const has = async () =>
        (await ipt(["-S", "FORWARD"])).stdout.includes(
          `-A FORWARD ${UNCONDITIONAL_ACCEPT.join(" ")}\n`,
        );
      assert.ok(await has());
      assert.ok(await eventually(async () => !(await has()), 5000, 200), "removed by a resync");
      assert.equal(await whoami(lab.vmiNamespace("a"), lab.pod().address, POD_PORT), undefined);
      assert.equal(await whoami(outside(), EIP, VMI_PORT), lab.topology.outside);
    });

    test("without the CNI's DROP the VMI reaches the pod again, with its own address", async () => {
      await ipt(["-D", ...dropRule]);
      assert.equal(await whoami(lab.vmiNamespace("a"), lab.pod().address, POD_PORT), vmi);
    });

    test("a FORWARD DROP policy in the other backend is warned about at start and counted", async () => {
      const other = mode === "nft" ? "legacy" : "nft";
      await lab.nodeExec(1, [`iptables-${other}`, "-P", "FORWARD", "DROP"]);
      try {
        // Both backends see every packet: the other one's policy drops the EIP's traffic.
        assert.equal(await whoami(outside(), EIP, VMI_PORT), undefined);
        await agent.stop();
        agent = await startAgent(lab, 1, { name: "agent-node1-other-backend" });
        assert.match(agent.proc.output(), new RegExp(`"mode":"${mode}","requested":"auto"`));
        assert.match(
          agent.proc.output(),
          /"drops":\["filter FORWARD policy DROP"\].*"msg":"the other iptables backend holds policies or rules that may drop EIP traffic"/,
        );
        const url = `http://${lab.node(1).mgmtAddress}:9127/metrics`;
        const script = `fetch(${JSON.stringify(url)}).then(r => r.text()).then(t => process.stdout.write(t))`;
        const { stdout } = await lab.nodeExec(1, [process.execPath, "-e", script]);
        assert.match(
          stdout,
          new RegExp(
            `^kube_eip_agent_iptables_other_backend_drops\\{backend="${other}"\\} 1$`,
            "m",
          ),
        );
      } finally {
        await lab.nodeExec(1, [`iptables-${other}`, "-P", "FORWARD", "ACCEPT"]);
      }
      assert.equal(await whoami(outside(), EIP, VMI_PORT), lab.topology.outside);
    });
  });
}
