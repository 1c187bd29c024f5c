// The operator end to end: a real kube-apiserver in the lab, real agents on two nodes
// announcing to the BIRD router, the operator in its own process with only its
// ServiceAccount's token and the RBAC of config/ (so that RBAC is proven sufficient); the tests play
// virt-handler (VMI status) and watch what the user would: EipBinding status, kubectl, and
// traffic from the host behind the router.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, eipctl, listedBindings, startAgent } from "../src/lab/agents.js";
import { type BgpRouter, startBgpRouter } from "../src/lab/bgp-router.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { type LabOperator, startOperator } from "../src/lab/operator.js";
import { fileURLToPath } from "node:url";
import { NEEDS_ROOT, eventually, sleep } from "./harness.js";

/** The manifests a user deploys: namespace, ServiceAccount, RBAC (and an inert Deployment). */
const CONFIG_DEFAULT = fileURLToPath(new URL("../../config/default", import.meta.url));

const PORT = 8080;

interface Status {
  eipAddr?: string;
  nodeName?: string;
  vmiAddress?: string;
  observedGeneration?: number;
  conditions?: { type: string; status: string; reason: string; message: string }[];
}

describe(
  "eip-operator with a real kube-apiserver, agents and a BGP router",
  { skip: NEEDS_ROOT },
  () => {
    let lab: Lab;
    let router: BgpRouter;
    let cluster: LabCluster;
    let operator: LabOperator;
    /** The operator runs with its ServiceAccount's token and the manifests' RBAC, nothing more. */
    let operatorKubeconfig = "";
    const start = () => startOperator(cluster, { kubeconfig: operatorKubeconfig });
    const agents = new Map<number, NodeAgent>();

    const outside = () => lab.describe().outside.namespace;
    const kubectl = (...args: string[]) => cluster.kubectl(args);
    const apply = (name: string, eip: string, vmi: string) =>
      cluster.applyEipBinding(name, eip, vmi);
    /** The EipBinding's status; undefined only when the apiserver says it is NotFound. */
    const status = async (name: string): Promise<Status | undefined> => {
      let out: string;
      try {
        out = await kubectl("get", "eipbinding", name, "-o", "jsonpath={.status}");
      } catch (err) {
        const stderr = (err as { stderr?: string }).stderr ?? "";
        if (/\(NotFound\): eipbindings\.extension\.lucheng0127 "[^"]+" not found/.test(stderr)) {
          return undefined; // gone
        }
        throw err; // kubectl or the apiserver failed: not an answer
      }
      return out ? (JSON.parse(out) as Status) : {};
    };
    const ready = async (name: string) =>
      (await status(name))?.conditions?.find((c) => c.type === "Ready");
    const becomes = (name: string, reason: string, ms = 10_000) =>
      eventually(async () => (await ready(name))?.reason === reason, ms, 50);
    const held = (node: number) => listedBindings(lab, node);
    const holds = async (node: number, eip: string) =>
      (await held(node)).some((b) => b.eipAddr === eip);
    const whoami = (fromNs: string, addr: string) =>
      lab.tcpRequest(fromNs, addr, PORT, { timeoutSec: 2 }).then(
        (s) => s.trim(),
        () => undefined,
      );
    const reaches = (eip: string, ms = 10_000) =>
      eventually(async () => (await whoami(outside(), eip)) === lab.topology.outside, ms, 50);
    const startNodeAgent = async (node: number) => {
      const a = await startAgent(lab, node, {
        extraArgs: [...router.agentArgs(node), "--bgp-listen-port", "179"],
      });
      agents.set(node, a);
      return a;
    };

    before(async () => {
      lab = await Lab.up({ nodes: 2, removeOnExit: true });
      router = await startBgpRouter(lab);
      cluster = await startLabCluster(lab);
      await lab.startTcpServer(outside(), PORT);
      await startNodeAgent(1);
      await startNodeAgent(2);
      await cluster.kubectl(["apply", "--server-side", "-k", CONFIG_DEFAULT]);
      const token = (
        await cluster.kubectl([
          "create",
          "token",
          "-n",
          "kube-eip-system",
          "kube-eip-controller-manager",
        ])
      ).trim();
      operatorKubeconfig = await cluster.controlPlane.writeTokenKubeconfig("eip-operator", token);
      operator = await start();
    });

    after(async () => {
      await operator?.stop().catch(() => {});
      for (const a of agents.values()) await a.stop().catch(() => {});
      await lab?.down();
    });

    test("a Running VMI and an EipBinding: Ready at once, traffic through the EIP both ways", async (t) => {
      const vmi = await cluster.createVmi("web", 1);
      await lab.startTcpServer(lab.vmiNamespace("web"), PORT);
      const t0 = performance.now();
      await apply("web", "192.168.18.100", "web");
      await kubectl("wait", "--for=condition=Ready", "eipbinding/web", "--timeout=10s");
      const readyMs = performance.now() - t0;
      const s = await status("web");
      assert.equal(s?.nodeName, "node1");
      assert.equal(s?.vmiAddress, vmi.address);
      assert.equal(s?.observedGeneration, 1);
      assert.ok(await reaches("192.168.18.100"), "the outside reaches the VMI through the EIP");
      assert.equal(await whoami(lab.vmiNamespace("web"), lab.topology.outside), "192.168.18.100");
      const table = await kubectl("get", "eipbinding", "web");
      assert.match(table, /web\s+192\.168\.18\.100\s+web\s+node1\s+10\.244\.1\.\d+\s+True/);
      const events = await kubectl("get", "events.events.k8s.io", "-o", "json");
      assert.match(events, /"reason": "Bound"/);
      t.diagnostic(`Ready ${readyMs.toFixed(0)} ms after kubectl apply`);
    });

    test("the VMI moves to node 2: traffic resumes there, node 1 holds nothing; the gap is reported", async (t) => {
      let lastOk = performance.now();
      let worstGap = 0;
      let polling = true;
      const poller = (async () => {
        while (polling) {
          const ok = (await whoami(outside(), "192.168.18.100")) === lab.topology.outside;
          const t = performance.now();
          if (ok) {
            worstGap = Math.max(worstGap, t - lastOk);
            lastOk = t;
          }
          await sleep(20);
        }
      })();
      await sleep(300);
      const written = await cluster.moveVmi("web", 2);
      assert.ok(await becomes("web", "Bound"));
      assert.ok(await eventually(async () => (await status("web"))?.nodeName === "node2", 10_000));
      let resumed = 0;
      assert.ok(
        await eventually(
          async () => {
            const ok = (await whoami(outside(), "192.168.18.100")) === lab.topology.outside;
            if (ok) resumed = performance.now();
            return ok;
          },
          10_000,
          10,
        ),
      );
      polling = false;
      await poller;
      assert.equal(await holds(1, "192.168.18.100"), false, "node 1 holds nothing");
      assert.equal(await holds(2, "192.168.18.100"), true);
      t.diagnostic(
        `traffic resumed ${(resumed - written).toFixed(0)} ms after the status update; worst gap seen ${worstGap.toFixed(0)} ms`,
      );
    });

    test("the VMI stops: unbound everywhere; it runs again: bound again", async () => {
      await cluster.setVmiPhase("web", "Succeeded");
      assert.ok(await becomes("web", "VMINotRunning"));
      assert.equal(await holds(2, "192.168.18.100"), false);
      assert.equal((await status("web"))?.nodeName, undefined);
      await cluster.setVmiPhase("web", "Running");
      assert.ok(await becomes("web", "Bound"));
      assert.ok(await reaches("192.168.18.100"));
    });

    test("the VMI is deleted: VMINotFound and unbound; it comes back: bound", async () => {
      await cluster.deleteVmi("web");
      assert.ok(await becomes("web", "VMINotFound"));
      assert.equal(await holds(2, "192.168.18.100"), false);
      await cluster.createVmi("web", 1);
      await lab.startTcpServer(lab.vmiNamespace("web"), PORT, { name: "whoami-web-2" });
      assert.ok(await becomes("web", "Bound"));
      assert.ok(await reaches("192.168.18.100"));
    });

    test("the EIP is edited: the old one is released, the new one bound", async () => {
      await apply("web", "192.168.18.110", "web");
      assert.ok(
        await eventually(async () => (await status("web"))?.eipAddr === "192.168.18.110", 10_000),
      );
      assert.ok(await becomes("web", "Bound"));
      assert.equal(await holds(1, "192.168.18.100"), false);
      assert.ok(await reaches("192.168.18.110"));
      assert.equal((await status("web"))?.observedGeneration, 2);
    });

    test("two EipBindings for one EIP: the newer says EipConflict, and takes over when the older goes", async () => {
      await cluster.createVmi("db", 2);
      await apply("db", "192.168.18.110", "db");
      assert.ok(await becomes("db", "EipConflict"));
      assert.match((await ready("db"))?.message ?? "", /held by the older EipBinding default\/web/);
      assert.equal(await holds(2, "192.168.18.110"), false);
      await kubectl("delete", "eipbinding", "web", "--wait=true", "--timeout=20s");
      assert.equal(await holds(1, "192.168.18.110"), false, "deletion unbound it first");
      assert.ok(await becomes("db", "Bound"));
      assert.ok(await eventually(() => holds(2, "192.168.18.110"), 5000));
    });

    test("an agent down during a bind: AgentUnavailable, then Ready once it is back", async () => {
      await agents.get(1)?.kill();
      await apply("web", "192.168.18.120", "web");
      assert.ok(await becomes("web", "AgentUnavailable"));
      await startNodeAgent(1);
      assert.ok(await becomes("web", "Bound", 30_000), "retried until the agent answered");
    });

    test("deleting while the agent is down waits, visibly, and finishes when it is back", async () => {
      await agents.get(1)?.kill();
      await kubectl("delete", "eipbinding", "web", "--wait=false");
      assert.ok(await becomes("web", "Unbinding"));
      assert.ok((await status("web")) !== undefined, "the object stays while the agent is down");
      await startNodeAgent(1);
      assert.ok(await eventually(async () => (await status("web")) === undefined, 30_000), "gone");
      assert.equal(await holds(1, "192.168.18.120"), false);
    });

    test("the operator restarted mid-way: what changed meanwhile is done", async () => {
      await operator.kill();
      await apply("web", "192.168.18.121", "web");
      await cluster.moveVmi("db", 1);
      operator = await start();
      assert.ok(await becomes("web", "Bound", 15_000));
      assert.ok(await eventually(async () => (await status("db"))?.nodeName === "node1", 15_000));
      assert.equal(await holds(2, "192.168.18.110"), false);
      assert.ok(await reaches("192.168.18.121"));
    });

    test("the apiserver restarted: the operator carries on and sees the next change", async () => {
      await cluster.controlPlane.restartApiServer();
      await cluster.moveVmi("db", 2);
      assert.ok(await eventually(async () => (await status("db"))?.nodeName === "node2", 60_000));
      assert.ok(operator.proc.running());
    });

    test("anti-entropy: a node that lost its bindings gets them back; a stray binding goes", async () => {
      // As if node 2 were rebuilt: its agent's bindings are removed behind the operator's back.
      const r = await eipctl(lab, 2, [
        "--action",
        "unbind",
        "--eip-ip",
        "192.168.18.110",
        "--vmi-ip",
        cluster.vmi("db").address,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const stray = await eipctl(lab, 1, [
        "--action",
        "bind",
        "--eip-ip",
        "192.168.18.199",
        "--vmi-ip",
        "10.244.1.199",
      ]);
      assert.equal(stray.code, 0, stray.stderr);
      assert.ok(
        await eventually(() => holds(2, "192.168.18.110"), 15_000),
        "re-bound without anyone acting",
      );
      assert.ok(
        await eventually(async () => !(await holds(1, "192.168.18.199")), 15_000),
        "stray removed",
      );
    });

    test("bad objects are refused by the API server", async () => {
      await assert.rejects(apply("bad", "192.168.18.999", "web"), /eipAddr/);
      await assert.rejects(
        cluster.kubectl(
          ["apply", "-f", "-"],
          JSON.stringify({
            apiVersion: "extension.lucheng0127/v1",
            kind: "EipBinding",
            metadata: { name: "novmi", namespace: "default" },
            spec: { eipAddr: "192.168.18.50" },
          }),
        ),
        /vmiName: Required/,
      );
    });

    test("metrics and probes answer", async () => {
      const get = async (port: number, path: string) =>
        (
          await lab.exec(cluster.routerNamespace, [
            process.execPath,
            "-e",
            `fetch("http://127.0.0.1:${port}${path}").then(async r => process.stdout.write(r.status + " " + await r.text()))`,
          ])
        ).stdout;
      assert.match(await get(operator.healthPort, "/healthz"), /^200 ok/);
      assert.match(await get(operator.healthPort, "/readyz"), /^200 ok/);
      const m = await get(operator.metricsPort, "/metrics");
      assert.match(m, /kube_eip_operator_reconcile_total\{result="success"\} [1-9]/);
      assert.match(m, /kube_eip_operator_bindings\{reason="Bound"\} [1-9]/);
      // The families stock dashboards read, fed by the real queue and API client.
      assert.match(
        m,
        /^controller_runtime_reconcile_total\{controller="eipbinding",result="success"\} [1-9]/m,
      );
      assert.match(m, /^workqueue_adds_total\{controller="eipbinding",name="eipbinding"\} [1-9]/m);
      assert.match(m, /^rest_client_requests_total\{code="200",method="GET",host="[^"]+"\} [1-9]/m);
      assert.match(
        m,
        /^rest_client_requests_total\{code="200",method="PATCH",host="[^"]+"\} [1-9]/m,
      );
      assert.match(m, /^# TYPE kube_eip_operator_informer_restarts_total counter$/m);
    });
  },
);
