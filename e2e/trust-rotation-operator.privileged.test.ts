// Rotation without restarts with the real operator, a real kube-apiserver and real agents on
// mutual TLS (issue 11). While a ping runs through an EIP bound by an EipBinding and further
// EipBindings are created and deleted on both nodes: the operator's client certificate is
// renewed; then both CAs are rotated as one would in production: the agents' client-CA
// files and the operator's agent-CA file get old+new, every certificate (operator, agents,
// administrator) is reissued by the new CAs, and the old CAs leave the bundles. Each file is
// written aside and renamed in place. Last, every agent connection is cut (ss -K) so that
// the operator has to dial again with what it holds now: only the new trust works then.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, readFile, rename, writeFile } from "node:fs/promises";
import { type CertFiles, makeCerts } from "../src/deploy/certs.js";
import { issueCert } from "../src/deploy/openssl.js";
import { ExecRunner } from "../src/kernel/runner.js";
import { Lab, type LabProcess } from "../src/lab/lab.js";
import { EIPCTL_BIN, type NodeAgent, listedBindings, startAgent } from "../src/lab/agents.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { labPki } from "../src/lab/lab-tls.js";
import { type LabOperator, startOperator } from "../src/lab/operator.js";
import { NEEDS_ROOT, eventually, sleep } from "./harness.js";

const runner = new ExecRunner({ timeoutMs: 30_000 });
const CHANGED = "TLS files changed: new connections use them";
const DAY = 86400;

/** Puts `content` at `path` as a renewal does: written aside, then renamed in place. */
async function put(path: string, content: Buffer | string) {
  await writeFile(`${path}.new`, content);
  await rename(`${path}.new`, path);
}

const count = (p: LabProcess) => p.output().split(CHANGED).length - 1;

describe(
  "certificate and CA rotation under load, real operator and agents",
  { skip: NEEDS_ROOT },
  () => {
    let lab: Lab;
    let cluster: LabCluster;
    let operator: LabOperator;
    const agents: NodeAgent[] = [];
    const kubectl = (...args: string[]) => cluster.kubectl(args);

    /** The binding's Ready reason; "gone" only when the apiserver says NotFound. */
    const reasonOf = async (name: string): Promise<string> => {
      try {
        return await kubectl(
          "get",
          "eipbinding",
          name,
          "-o",
          'jsonpath={.status.conditions[?(@.type=="Ready")].reason}',
        );
      } catch (err) {
        if (/\(NotFound\)/.test((err as { stderr?: string }).stderr ?? "")) return "gone";
        throw err;
      }
    };
    const becomes = (name: string, reason: string, ms = 20_000) =>
      eventually(async () => (await reasonOf(name).catch(() => "")) === reason, ms, 100);

    /** The operator's metric for one file, in seconds to expiry. */
    const operatorExpiry = async (file: string): Promise<number> => {
      const m = (
        await lab.exec(cluster.routerNamespace, [
          process.execPath,
          "-e",
          `fetch("http://127.0.0.1:${operator.metricsPort}/metrics").then(async r => process.stdout.write(await r.text()))`,
        ])
      ).stdout;
      const line = m
        .split("\n")
        .find(
          (l) => l.startsWith("kube_eip_operator_tls_cert_expiry_seconds{") && l.includes(file),
        );
      return Number(line?.split(" ")[1] ?? NaN);
    };

    /** Runs `step`, then waits until each process has logged that it took the files. */
    const step = async (what: string, procs: LabProcess[], change: () => Promise<void>) => {
      const before = procs.map(count);
      const t0 = Date.now();
      await change();
      const took = await eventually(
        async () => procs.every((p, i) => count(p) > before[i]!),
        25_000,
      );
      assert.ok(took, `${what}: every process took the new files`);
      timings.push(`${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    };
    const timings: string[] = [];

    before(async () => {
      lab = await Lab.up({ nodes: 2, removeOnExit: true });
      cluster = await startLabCluster(lab);
      await labPki(lab);
      for (const node of [1, 2]) agents.push(await startAgent(lab, node));
      operator = await startOperator(cluster);
    });

    after(async () => {
      await operator?.stop().catch(() => {});
      for (const a of agents) await a.stop().catch(() => {});
      await lab?.down();
    });

    test("every certificate and both CAs rotated: bindings keep becoming Bound, no ping lost, no restart", async () => {
      const files = await labPki(lab);
      const names = [1, 2].map((n) => lab.node(n).name);
      const nodePki = (n: number) => files.nodes.get(names[n - 1]!) ?? assert.fail();
      const pids = [operator.proc.pid, ...agents.map((a) => a.proc.pid)];
      const everyone = [operator.proc, ...agents.map((a) => a.proc)];

      await cluster.createVmi("a", 1);
      await cluster.applyEipBinding("a", "192.168.18.100", "a");
      assert.ok(await becomes("a", "Bound"), "a Bound");
      for (const n of [1, 2]) await cluster.createVmi(`c${n}`, n);

      // Traffic: ping through the EIP in 10 s rounds until told to stop.
      let stop = false;
      const outside = lab.describe().outside.namespace;
      const pinging = (async () => {
        let sent = 0;
        let received = 0;
        while (!stop) {
          const r = await lab.ping(outside, "192.168.18.100", { count: 50, intervalSec: 0.1 });
          sent += r.sent;
          received += r.received;
        }
        return { sent, received };
      })();
      // Binds: EipBindings created and deleted on both nodes, one after the other.
      const failures: string[] = [];
      let cycles = 0;
      let slowestBound = 0;
      const churning = (async () => {
        for (let i = 0; !stop; i++) {
          const n = (i % 2) + 1;
          const name = `churn-${i}`;
          const t0 = Date.now();
          await cluster.applyEipBinding(name, `192.168.18.${110 + n}`, `c${n}`);
          if (!(await becomes(name, "Bound"))) failures.push(`${name}: ${await reasonOf(name)}`);
          slowestBound = Math.max(slowestBound, Date.now() - t0);
          await kubectl("delete", "eipbinding", name, "--wait=false");
          if (!(await becomes(name, "gone"))) failures.push(`${name}: not deleted`);
          cycles++;
        }
      })();
      await sleep(3000);

      // 1. The operator's client certificate renewed by the same CA (3 days).
      const renewed = {
        cert: `${files.operator.cert}.renewed`,
        key: `${files.operator.key}.renewed`,
      };
      await step("operator certificate renewed", [operator.proc], async () => {
        await issueCert(
          runner,
          files.clientCa,
          renewed,
          "/CN=kube-eip-operator",
          [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature",
            "extendedKeyUsage=clientAuth",
          ],
          3,
        );
        await put(files.operator.key, await readFile(renewed.key));
        await put(files.operator.cert, await readFile(renewed.cert));
      });
      const e1 = await operatorExpiry(files.operator.cert);
      assert.ok(e1 > 2 * DAY && e1 <= 3 * DAY, `the metric shows the renewed certificate: ${e1}`);
      await sleep(2000);

      // 2. New CAs (and certificates they sign, 5 days), trusted beside the old ones.
      const fresh: CertFiles = await makeCerts(runner, {
        dir: lab.stateDir("pki-rotated"),
        nodes: [1, 2].map((n) => ({ name: lab.node(n).name, ip: lab.node(n).mgmtAddress })),
        days: 5,
      });
      const oldAgentCa = await readFile(files.agentCa.cert);
      const oldClientCa = await readFile(files.clientCa.cert);
      const newAgentCa = await readFile(fresh.agentCa.cert);
      const newClientCa = await readFile(fresh.clientCa.cert);
      await step("CA bundles old+new", everyone, async () => {
        await put(files.agentCa.cert, Buffer.concat([oldAgentCa, newAgentCa]));
        for (const n of [1, 2])
          await put(nodePki(n).clientCa, Buffer.concat([oldClientCa, newClientCa]));
      });
      await sleep(2000);

      // 3. Every certificate reissued by the new CAs.
      const oldAdmin = { cert: `${files.admin.cert}.old`, key: `${files.admin.key}.old` };
      await copyFile(files.admin.cert, oldAdmin.cert);
      await copyFile(files.admin.key, oldAdmin.key);
      await step("certificates from the new CAs", everyone, async () => {
        for (const [from, to] of [
          [fresh.operator, files.operator],
          [fresh.admin, files.admin],
          ...[1, 2].map((n) => [fresh.nodes.get(names[n - 1]!)!, nodePki(n)] as const),
        ] as const) {
          await put(to.key, await readFile(from.key));
          await put(to.cert, await readFile(from.cert));
        }
      });
      const e3 = await operatorExpiry(files.operator.cert);
      assert.ok(e3 > 4 * DAY && e3 <= 5 * DAY, `the metric shows the new CA's certificate: ${e3}`);
      await sleep(2000);

      // 4. The old CAs leave the bundles.
      await step("old CAs removed", everyone, async () => {
        await put(files.agentCa.cert, newAgentCa);
        for (const n of [1, 2]) await put(nodePki(n).clientCa, newClientCa);
      });
      await sleep(2000);

      // 5. Every operator-agent connection cut: the operator dials again with what it has now.
      let cut = 0;
      for (const n of [1, 2]) {
        const r = await lab.nodeExec(n, [
          "ss",
          "-K",
          "-H",
          "-t",
          "state",
          "established",
          "sport",
          "=",
          ":6127",
        ]);
        cut += r.stdout.split("\n").filter((l) => l.trim()).length;
      }
      assert.ok(cut >= 1, "the operator had connections to the agents");
      await sleep(5000);
      stop = true;
      await churning;
      for (const n of [1, 2]) {
        const name = `after-${n}`;
        await cluster.applyEipBinding(name, `192.168.18.${120 + n}`, `c${n}`);
        assert.ok(
          await becomes(name, "Bound"),
          `${name} Bound after the rotation: ${await reasonOf(name)}`,
        );
      }
      await kubectl("delete", "eipbinding", "after-1", "--wait=false");
      assert.ok(await becomes("after-1", "gone"), "after-1 deleted after the rotation");
      const ping = await pinging;

      // The administrator's old certificate (old CA) is refused; the reissued one accepted.
      const oldAdminList = await lab
        .nodeExec(1, [
          process.execPath,
          EIPCTL_BIN,
          "--target",
          `${lab.node(1).mgmtAddress}:6127`,
          "--tls-ca",
          files.agentCa.cert,
          "--tls-cert",
          oldAdmin.cert,
          "--tls-key",
          oldAdmin.key,
          "--tls-server-name",
          names[0]!,
          "--action",
          "list",
        ])
        .then(
          () => "accepted",
          () => "refused",
        );
      assert.equal(oldAdminList, "refused", "a certificate of the removed CA is refused");
      assert.deepEqual(
        (await listedBindings(lab, 2)).map((b) => b.eipAddr),
        ["192.168.18.122"],
        "the reissued admin certificate is accepted; node 2 holds what the bindings say",
      );

      console.log(
        `rotation: ${timings.join("; ")}; ${cycles} create/delete cycles, slowest Bound ${slowestBound} ms; ` +
          `ping ${ping.received}/${ping.sent}; ${cut} connections cut`,
      );
      assert.deepEqual(failures, [], "every EipBinding became Bound and every deletion finished");
      assert.ok(cycles >= 4, `bindings churned throughout (${cycles} cycles)`);
      assert.equal(ping.received, ping.sent, `no ping lost (${ping.received}/${ping.sent})`);
      assert.equal(await reasonOf("a"), "Bound");
      assert.ok(
        everyone.every((p, i) => p.running() && p.pid === pids[i]),
        "the same operator and agent processes throughout",
      );
    });
  },
);
