// EipPools end to end: a real kube-apiserver in the lab, real agents on two nodes announcing
// to the BIRD router, the operator in its own process with its ServiceAccount's token and
// the RBAC of config/. A binding that names no address gets one from the default pool and
// carries traffic; addresses outside a namespace's pools are fenced (no agent holds them);
// limits and exhaustion wait and are served oldest first; allocations survive a restart.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, listedBindings, startAgent } from "../src/lab/agents.js";
import { type BgpRouter, startBgpRouter } from "../src/lab/bgp-router.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { type LabOperator, startOperator } from "../src/lab/operator.js";
import { NEEDS_ROOT, eventually } from "./harness.js";

const CONFIG_DEFAULT = fileURLToPath(new URL("../../config/default", import.meta.url));
const PORT = 8080;

interface Binding {
  spec: { eipAddr?: string };
  metadata: { annotations?: Record<string, string> };
  status?: { eipAddr?: string; conditions?: { type: string; reason: string; message: string }[] };
}

describe(
  "EipPools with a real kube-apiserver, agents and a BGP router",
  { skip: NEEDS_ROOT },
  () => {
    let lab: Lab;
    let router: BgpRouter;
    let cluster: LabCluster;
    let operator: LabOperator;
    let kubeconfig = "";
    const agents: NodeAgent[] = [];
    const start = () =>
      startOperator(cluster, {
        kubeconfig,
        // The agents' --gateway-ip: never handed out.
        extraArgs: ["--pool-reserved", lab.topology.routerPublic],
      });
    const kubectl = (...args: string[]) => cluster.kubectl(args);
    const apply = (doc: object) => cluster.kubectl(["apply", "-f", "-"], JSON.stringify(doc));
    const pool = (name: string, spec: object) =>
      apply({ apiVersion: "extension.lucheng0127/v1", kind: "EipPool", metadata: { name }, spec });
    const binding = (ns: string, name: string, spec: object) =>
      apply({
        apiVersion: "extension.lucheng0127/v1",
        kind: "EipBinding",
        metadata: { name, namespace: ns },
        spec: { vmiName: name, ...spec },
      });
    const get = async (ns: string, name: string) =>
      JSON.parse(await kubectl("get", "eipbinding", "-n", ns, name, "-o", "json")) as Binding;
    const ready = async (ns: string, name: string) =>
      (await get(ns, name)).status?.conditions?.find((c) => c.type === "Ready");
    const becomes = async (ns: string, name: string, reason: string, ms = 15_000) => {
      const ok = await eventually(async () => (await ready(ns, name))?.reason === reason, ms, 100);
      assert.ok(ok, `${ns}/${name} is ${JSON.stringify(await ready(ns, name))}, not ${reason}`);
    };
    const heldAnywhere = async (eip: string) =>
      (await Promise.all([1, 2].map((n) => listedBindings(lab, n))))
        .flat()
        .some((b) => b.eipAddr === eip);
    const eventReasons = async (ns: string, name: string) =>
      kubectl(
        "get",
        "events.events.k8s.io",
        "-n",
        ns,
        "--field-selector",
        `regarding.name=${name}`,
        "-o",
        'jsonpath={range .items[*]}{.reason}{"\\n"}{end}',
      );

    before(async () => {
      lab = await Lab.up({ nodes: 2, removeOnExit: true });
      router = await startBgpRouter(lab);
      cluster = await startLabCluster(lab);
      await lab.startTcpServer(lab.describe().outside.namespace, PORT);
      for (const node of [1, 2]) {
        agents.push(
          await startAgent(lab, node, {
            extraArgs: [...router.agentArgs(node), "--bgp-listen-port", "179"],
          }),
        );
      }
      await cluster.kubectl(["apply", "--server-side", "-k", CONFIG_DEFAULT]);
      for (const ns of ["other", "third"]) await cluster.createNamespace(ns);
      const token = (
        await kubectl("create", "token", "-n", "kube-eip-system", "kube-eip-controller-manager")
      ).trim();
      kubeconfig = await cluster.controlPlane.writeTokenKubeconfig("eip-operator", token);
      // The default pool, for the cluster's namespace only; a small one for anyone, one each.
      await pool("public", {
        addresses: ["192.168.18.0/25"],
        default: true,
        namespaces: [cluster.namespace],
      });
      await pool("tiny", { addresses: ["192.168.18.200-192.168.18.201"], perNamespaceLimit: 1 });
      operator = await start();
    });

    after(async () => {
      await operator?.stop().catch(() => {});
      for (const a of agents) await a.stop().catch(() => {});
      await lab?.down();
    });

    test("a binding naming no address gets the lowest free one of the default pool and carries traffic", async () => {
      const ns = cluster.namespace;
      await cluster.createVmi("web", 1);
      await lab.startTcpServer(lab.vmiNamespace("web"), PORT);
      await binding(ns, "web", {});
      await becomes(ns, "web", "Bound");
      const b = await get(ns, "web");
      // .0 is the network address and .1 the agents' gateway.
      assert.equal(b.spec.eipAddr, "192.168.18.2");
      assert.equal(b.status?.eipAddr, "192.168.18.2");
      assert.equal(b.metadata.annotations?.["kube-eip.lucheng0127/allocated-from"], "public");
      assert.match(
        await kubectl("get", "eipbinding", "-n", ns, "web"),
        /\nweb\s+192\.168\.18\.2\s+web\s+node1/,
      );
      const reached = await eventually(
        async () =>
          (await lab
            .tcpRequest(lab.describe().outside.namespace, "192.168.18.2", PORT, { timeoutSec: 2 })
            .then(
              (s) => s.trim(),
              () => undefined,
            )) === lab.topology.outside,
        15_000,
        100,
      );
      assert.ok(reached, "the outside host reaches the VMI through the allocated EIP");
      assert.match(await eventReasons(ns, "web"), /Allocated/);
      // 126 hosts in a /25, less the gateway and the one allocated.
      const table = await eventually(
        async () => /\npublic\s.*\s1\s+124\s/.test(await kubectl("get", "eippool")),
        10_000,
        100,
      );
      assert.ok(table, await kubectl("get", "eippool"));
    });

    test("fences: another namespace's pool address and an address in no pool are NotInPool, and no agent holds them", async () => {
      await cluster.createVmi("squat", 2, { namespace: "other" });
      await binding("other", "squat", { eipAddr: "192.168.18.50" });
      await becomes("other", "squat", "NotInPool");
      assert.match(
        (await ready("other", "squat"))?.message ?? "",
        /public, which does not admit namespace other/,
      );
      await cluster.createVmi("stray", 2);
      await binding(cluster.namespace, "stray", { eipAddr: "192.168.18.150" });
      await becomes(cluster.namespace, "stray", "NotInPool");
      assert.match(await eventReasons("other", "squat"), /NotInPool/);
      assert.equal(await heldAnywhere("192.168.18.50"), false);
      assert.equal(await heldAnywhere("192.168.18.150"), false);
      // The namespace's default pool does not admit "other" either.
      await binding("other", "auto", {});
      await becomes("other", "auto", "NotInPool");
    });

    test("limits and exhaustion wait, and are served oldest first when an address frees up", async () => {
      await binding(cluster.namespace, "t1", { poolName: "tiny" });
      await becomes(cluster.namespace, "t1", "VMINotFound");
      assert.equal((await get(cluster.namespace, "t1")).spec.eipAddr, "192.168.18.200");
      await binding(cluster.namespace, "t2", { poolName: "tiny" });
      await becomes(cluster.namespace, "t2", "QuotaExceeded");
      await binding("other", "t3", { poolName: "tiny" });
      await becomes("other", "t3", "VMINotFound");
      assert.equal((await get("other", "t3")).spec.eipAddr, "192.168.18.201");
      await binding("third", "t4", { poolName: "tiny" });
      await becomes("third", "t4", "PoolExhausted");
      assert.match(await eventReasons("third", "t4"), /PoolExhausted/);
      // t1 goes: its address and its namespace's quota come free; t2 is older than t4.
      await kubectl("delete", "eipbinding", "-n", cluster.namespace, "t1", "--wait=true");
      await becomes(cluster.namespace, "t2", "VMINotFound");
      assert.equal((await get(cluster.namespace, "t2")).spec.eipAddr, "192.168.18.200");
      assert.equal((await ready("third", "t4"))?.reason, "PoolExhausted");
    });

    test("allocations survive an operator restart; the next binding gets the next free address", async () => {
      await operator.stop();
      operator = await start();
      await becomes(cluster.namespace, "web", "Bound");
      assert.equal((await get(cluster.namespace, "web")).spec.eipAddr, "192.168.18.2");
      assert.equal((await get(cluster.namespace, "t2")).spec.eipAddr, "192.168.18.200");
      await binding(cluster.namespace, "next", {});
      await becomes(cluster.namespace, "next", "VMINotFound");
      assert.equal((await get(cluster.namespace, "next")).spec.eipAddr, "192.168.18.3");
    });

    test("a pool overlapping an older one is reported invalid in its status and takes nothing", async () => {
      await pool("clash", { addresses: ["192.168.18.64/26"], default: true });
      const valid = () =>
        kubectl(
          "get",
          "eippool",
          "clash",
          "-o",
          'jsonpath={.status.conditions[?(@.type=="Valid")]}',
        );
      const reported = await eventually(
        async () => /"status":"False"/.test(await valid()),
        10_000,
        100,
      );
      assert.ok(reported, await valid());
      assert.match(await valid(), /overlaps the older EipPool public/);
      assert.match(
        await kubectl("get", "eippool", "clash", "-o", "wide"),
        /False\s+EipPool clash is invalid/,
      );
      // The default pool is still the older one.
      await binding(cluster.namespace, "after-clash", {});
      await becomes(cluster.namespace, "after-clash", "VMINotFound");
      assert.equal((await get(cluster.namespace, "after-clash")).spec.eipAddr, "192.168.18.4");
    });
  },
);
