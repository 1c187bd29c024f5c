// Asking for an EIP on the VM itself, end to end: a real kube-apiserver in the lab with
// KubeVirt's VirtualMachine and VMI CRDs (the lab plays virt-controller: src/lab/vms.ts),
// real agents on two nodes announcing to the BIRD router, the operator in its own process
// with its ServiceAccount's token and the RBAC of config/. The annotation on a VM makes the
// operator create an EipBinding the VM owns, with an address from a pool that nobody typed;
// it carries traffic both ways, survives the VM's restarts on another node, follows the
// annotation's pool, and goes with the annotation or the VM (the lab runs no garbage
// collector: the operator deletes it, and the owner reference a collector would follow is
// checked); a bare VMI's annotation works the same with the VMI as owner.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, listedBindings, startAgent } from "../src/lab/agents.js";
import { type BgpRouter, startBgpRouter } from "../src/lab/bgp-router.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { type LabOperator, startOperator } from "../src/lab/operator.js";
import { LabVms } from "../src/lab/vms.js";
import { NEEDS_ROOT, eventually, whoami } from "./harness.js";

const CONFIG_DEFAULT = fileURLToPath(new URL("../../config/default", import.meta.url));
const PORT = 8080;
const EIP = "kube-eip.lucheng0127/eip";

interface Binding {
  spec: { eipAddr?: string; vmiName: string; poolName?: string };
  metadata: {
    uid: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: Record<string, unknown>[];
  };
  status?: { nodeName?: string; conditions?: { type: string; reason: string }[] };
}

describe(
  "EIPs asked for on VirtualMachines and VMIs, with a real kube-apiserver, agents and a BGP router",
  { skip: NEEDS_ROOT },
  () => {
    let lab: Lab;
    let router: BgpRouter;
    let cluster: LabCluster;
    let operator: LabOperator;
    let vms: LabVms;
    let ns = "";
    let kubeconfig = "";
    const agents: NodeAgent[] = [];
    const kubectl = (...args: string[]) => cluster.kubectl(args);
    const apply = (doc: object) => cluster.kubectl(["apply", "-f", "-"], JSON.stringify(doc));
    const find = async (name: string): Promise<Binding | undefined> => {
      const out = await kubectl(
        "get",
        "eipbinding",
        "-n",
        ns,
        name,
        "-o",
        "json",
        "--ignore-not-found",
      );
      return out.trim() ? (JSON.parse(out) as Binding) : undefined;
    };
    const get = async (name: string): Promise<Binding> => {
      const b = await find(name);
      assert.ok(b, `EipBinding ${name} exists`);
      return b;
    };
    const ready = async (name: string) =>
      (await find(name))?.status?.conditions?.find((c) => c.type === "Ready");
    const becomes = async (name: string, reason: string, ms = 20_000) => {
      const ok = await eventually(async () => (await ready(name))?.reason === reason, ms, 100);
      assert.ok(ok, `${name} is ${JSON.stringify(await ready(name))}, not ${reason}`);
    };
    const gone = async (name: string) => {
      const ok = await eventually(async () => (await find(name)) === undefined, 20_000, 100);
      assert.ok(ok, `EipBinding ${name} is gone: ${JSON.stringify(await find(name))}`);
    };
    const held = async (eip: string) =>
      (await Promise.all([1, 2].map((n) => listedBindings(lab, n))))
        .flat()
        .filter((b) => b.eipAddr === eip);
    const outside = () => lab.describe().outside.namespace;
    /** outside -> EIP -> the VMI's who-am-I and back, and the VMI -> outside from the EIP. */
    const bothWays = async (vmi: string, eip: string) => {
      const inbound = await eventually(
        async () => (await whoami(lab, outside(), eip, PORT)) === lab.topology.outside,
        20_000,
        100,
      );
      assert.ok(inbound, `the outside host reaches VMI ${vmi} through ${eip}`);
      const seen = await whoami(lab, lab.vmiNamespace(vmi), lab.topology.outside, PORT);
      assert.equal(seen, eip, `VMI ${vmi} reaches the outside host from ${eip}`);
    };
    const vmEvents = async (kind: string, name: string) =>
      kubectl(
        "get",
        "events.events.k8s.io",
        "-n",
        ns,
        "--field-selector",
        `regarding.kind=${kind},regarding.name=${name}`,
        "-o",
        'jsonpath={range .items[*]}{.reason}{" "}{.note}{"\\n"}{end}',
      );

    before(async () => {
      lab = await Lab.up({ nodes: 2, removeOnExit: true });
      router = await startBgpRouter(lab);
      cluster = await startLabCluster(lab);
      ns = cluster.namespace;
      vms = new LabVms(cluster);
      await lab.startTcpServer(outside(), PORT);
      for (const node of [1, 2]) {
        agents.push(
          await startAgent(lab, node, {
            extraArgs: [...router.agentArgs(node), "--bgp-listen-port", "179"],
          }),
        );
      }
      await cluster.kubectl(["apply", "--server-side", "-k", CONFIG_DEFAULT]);
      const token = (
        await kubectl("create", "token", "-n", "kube-eip-system", "kube-eip-controller-manager")
      ).trim();
      kubeconfig = await cluster.controlPlane.writeTokenKubeconfig("eip-operator", token);
      for (const [name, spec] of [
        ["public", { addresses: ["192.168.18.0/25"], default: true }],
        ["tiny", { addresses: ["192.168.18.200-192.168.18.201"] }],
      ] as const) {
        await apply({
          apiVersion: "extension.lucheng0127/v1",
          kind: "EipPool",
          metadata: { name },
          spec,
        });
      }
      operator = await startOperator(cluster, {
        kubeconfig,
        extraArgs: ["--pool-reserved", lab.topology.routerPublic],
      });
    });

    after(async () => {
      await operator?.stop().catch(() => {});
      for (const a of agents) await a.stop().catch(() => {});
      await lab?.down();
    });

    test("a VM annotated auto gets a binding it owns, an address from the default pool, and traffic both ways", async () => {
      const vm = await vms.create("web", { annotations: { [EIP]: "auto" }, node: 1 });
      await lab.startTcpServer(lab.vmiNamespace("web"), PORT);
      await becomes("web", "Bound");
      const b = await get("web");
      // .0 is the network address and .1 the agents' gateway.
      assert.equal(b.spec.eipAddr, "192.168.18.2");
      assert.equal(b.spec.vmiName, "web");
      assert.equal(b.spec.poolName, undefined);
      assert.equal(b.metadata.annotations?.["kube-eip.lucheng0127/allocated-from"], "public");
      assert.equal(b.metadata.labels?.["kube-eip.lucheng0127/managed-by"], "eip-operator");
      // What a garbage collector follows: the VM, by uid, as the controller.
      assert.deepEqual(b.metadata.ownerReferences, [
        {
          apiVersion: "kubevirt.io/v1",
          kind: "VirtualMachine",
          name: "web",
          uid: vm.metadata.uid,
          controller: true,
        },
      ]);
      await bothWays("web", "192.168.18.2");
      assert.match(
        await vmEvents("VirtualMachine", "web"),
        /EipBindingCreated EipBinding web created for an EIP from the default pool/,
      );
    });

    test("the VM stopped keeps its EIP; started again on the other node it has the same one", async () => {
      const before = await get("web");
      await vms.stop("web");
      await becomes("web", "VMINotFound");
      assert.equal((await get("web")).metadata.uid, before.metadata.uid, "the same binding");
      assert.ok(
        await eventually(async () => (await held("192.168.18.2")).length === 0, 15_000, 100),
        "no agent holds the EIP of a stopped VM",
      );
      await vms.start("web", 2);
      await lab.startTcpServer(lab.vmiNamespace("web"), PORT);
      await becomes("web", "Bound");
      const after = await get("web");
      assert.equal(after.metadata.uid, before.metadata.uid);
      assert.equal(after.spec.eipAddr, "192.168.18.2");
      assert.equal(after.status?.nodeName, "node2");
      await bothWays("web", "192.168.18.2");
    });

    test("an annotation naming a pool allocates from it; changing it replaces the binding", async () => {
      await vms.create("db", { annotations: { [EIP]: "tiny" }, node: 2 });
      await lab.startTcpServer(lab.vmiNamespace("db"), PORT);
      await becomes("db", "Bound");
      const first = await get("db");
      assert.equal(first.spec.poolName, "tiny");
      assert.equal(first.spec.eipAddr, "192.168.18.200");
      await bothWays("db", "192.168.18.200");
      await kubectl("annotate", "--overwrite", "vm", "-n", ns, "db", `${EIP}=auto`);
      const replaced = await eventually(
        async () => {
          const b = await find("db");
          return (
            b !== undefined &&
            b.metadata.uid !== first.metadata.uid &&
            b.spec.eipAddr === "192.168.18.3"
          );
        },
        20_000,
        100,
      );
      assert.ok(replaced, JSON.stringify(await find("db")));
      await becomes("db", "Bound");
      await bothWays("db", "192.168.18.3");
      assert.deepEqual(await held("192.168.18.200"), [], "the old address is let go");
    });

    test("the annotation removed: the binding is deleted and the agent lets go", async () => {
      await kubectl("annotate", "vm", "-n", ns, "db", `${EIP}-`);
      await gone("db");
      assert.deepEqual(await held("192.168.18.3"), []);
      const unreached = await eventually(
        async () => (await whoami(lab, outside(), "192.168.18.3", PORT)) === undefined,
        10_000,
        100,
      );
      assert.ok(unreached, "the outside host no longer reaches the VMI through the old EIP");
      assert.match(
        await vmEvents("VirtualMachine", "db"),
        /EipBindingDeleted EipBinding db deleted: VirtualMachine db does not ask for an EIP/,
      );
    });

    test("the VM deleted: its binding is deleted by the operator, and the agent lets go", async () => {
      await vms.delete("web");
      await gone("web");
      assert.deepEqual(await held("192.168.18.2"), []);
    });

    test("a bare VMI annotated gets a binding it owns; deleted, the binding goes", async () => {
      await cluster.createVmi("solo", 1);
      await lab.startTcpServer(lab.vmiNamespace("solo"), PORT);
      await kubectl("annotate", "vmi", "-n", ns, "solo", `${EIP}=auto`);
      await becomes("solo", "Bound");
      const b = await get("solo");
      const vmi = (await cluster.getVmiObject("solo")) as { metadata: { uid: string } };
      assert.deepEqual(b.metadata.ownerReferences, [
        {
          apiVersion: "kubevirt.io/v1",
          kind: "VirtualMachineInstance",
          name: "solo",
          uid: vmi.metadata.uid,
          controller: true,
        },
      ]);
      // The lowest free address again: .2 and .3 came free.
      assert.equal(b.spec.eipAddr, "192.168.18.2");
      await bothWays("solo", "192.168.18.2");
      await cluster.deleteVmi("solo");
      await gone("solo");
      assert.deepEqual(await held("192.168.18.2"), []);
    });

    test("a binding someone made for the VM's VMI wins: the annotation adds none", async () => {
      await apply({
        apiVersion: "extension.lucheng0127/v1",
        kind: "EipBinding",
        metadata: { name: "mine-by-hand", namespace: ns },
        spec: { vmiName: "mine", eipAddr: "192.168.18.100" },
      });
      await vms.create("mine", { annotations: { [EIP]: "auto" }, node: 1 });
      await becomes("mine-by-hand", "Bound");
      const told = await eventually(
        async () =>
          /EipBindingByUser EipBinding mine-by-hand names VMI mine/.test(
            await vmEvents("VirtualMachine", "mine"),
          ),
        15_000,
        100,
      );
      assert.ok(told, await vmEvents("VirtualMachine", "mine"));
      assert.equal(await find("mine"), undefined);
      // Once it is gone, the annotation is served.
      await kubectl("delete", "eipbinding", "-n", ns, "mine-by-hand", "--wait=true");
      await becomes("mine", "Bound");
      assert.equal((await get("mine")).spec.eipAddr, "192.168.18.2");
    });

    test("the annotation on the VM's template counts as the VM's", async () => {
      await vms.create("tmpl", { templateAnnotations: { [EIP]: "tiny" }, node: 2 });
      await becomes("tmpl", "Bound");
      const b = await get("tmpl");
      assert.equal(b.spec.poolName, "tiny");
      assert.equal(b.spec.eipAddr, "192.168.18.200");
      assert.equal(b.metadata.ownerReferences?.[0]?.["kind"], "VirtualMachine");
    });

    test("only the leader acts: a standby makes nothing; the next leader serves the annotations", async () => {
      await operator.stop();
      const elect = ["--leader-elect", "--leader-election-namespace", "kube-eip-system"];
      const replica = (name: string, waitFor: string) =>
        startOperator(cluster, {
          kubeconfig,
          name,
          waitFor,
          extraArgs: ["--pool-reserved", lab.topology.routerPublic, ...elect],
        });
      const leader = await replica("operator-a", '"msg":"caches synced; reconciling"');
      operator = leader;
      const standby = await replica("operator-b", '"msg":"standing by; another replica leads"');
      const made = (name: string) => `"msg":"vm-bindings: EipBinding ${name} created`;
      await vms.create("late", { annotations: { [EIP]: "auto" } });
      await leader.proc.waitFor(made("late"), 20_000);
      const late = await get("late");
      assert.doesNotMatch(await readFile(standby.proc.logFile, "utf8"), /vm-bindings/);
      await leader.stop();
      operator = standby;
      await standby.proc.waitFor('"msg":"leading"', 30_000);
      await vms.create("later", { annotations: { [EIP]: "tiny" } });
      await standby.proc.waitFor(made("later"), 20_000);
      assert.equal((await get("later")).spec.poolName, "tiny");
      // The new leader keeps what the old one made.
      assert.equal((await get("late")).metadata.uid, late.metadata.uid);
    });
  },
);
