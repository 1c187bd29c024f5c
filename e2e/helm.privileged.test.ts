// The Helm chart against a real kube-apiserver (src/kube-lab) with the real helm: the
// defaults and every documented value combination pass a server-side dry run (the
// operator's namespace drawing no restricted Pod Security warning); then `helm install` stores
// the objects, `helm upgrade` keeps the chart's CAs and the operator's certificate (lookup),
// the chart README's kube-eip-certs --node step signs a node's files with the installed CAs,
// `helm uninstall` leaves the CRD. There is no kubelet: objects are stored, no pod runs.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ExecRunner } from "../src/kernel/runner.js";
import { startControlPlane, type ControlPlane } from "../src/kube-lab/control-plane.js";
import { findHelm } from "../src/kube-lab/helm.js";
import { CHART_DIR, RELEASE, documentedCombinations } from "../src/deploy/chart.js";
import { certPaths, makeCerts } from "../src/deploy/certs.js";
import { NEEDS_ROOT } from "./harness.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const fixture = (name: string) => join(ROOT, "e2e", "fixtures", name);
const runner = new ExecRunner();
const CERT_MANAGER = "tls.certManager.enabled=true";

interface Secret {
  data: Record<string, string>;
}

describe("the Helm chart on a real kube-apiserver", { skip: NEEDS_ROOT }, () => {
  let cp: ControlPlane;
  let helmBin: string;
  let combinations: string[][];

  const kubectl = (args: readonly string[], input?: string) =>
    runner.run(cp.binaries.kubectl, ["--kubeconfig", cp.kubeconfig, ...args], { input });
  const helm = (args: readonly string[]) =>
    runner.run(helmBin, ["--kubeconfig", cp.kubeconfig, ...args], { timeoutMs: 120_000 });
  const template = async (args: readonly string[]) =>
    (await helm(["template", RELEASE, CHART_DIR, ...args])).stdout;
  const dryRun = (manifests: string) =>
    kubectl(
      ["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-"],
      manifests,
    );
  const getJson = async <T>(args: readonly string[]): Promise<T> =>
    JSON.parse((await kubectl(["get", ...args, "-o", "json"])).stdout) as T;
  const tlsSecrets = async () =>
    Promise.all(
      ["kube-eip-agent-ca", "kube-eip-client-ca", "kube-eip-operator-tls"].map(
        async (name) => (await getJson<Secret>(["secret", "-n", "kube-eip-system", name])).data,
      ),
    );

  before(async () => {
    helmBin = await findHelm();
    combinations = documentedCombinations(await readFile(join(CHART_DIR, "README.md"), "utf8"));
    cp = await startControlPlane();
    await cp.applyManifests([fixture("kubevirt-vmi-crd.yaml")]);
    await cp.waitForCrdEstablished("virtualmachineinstances.kubevirt.io");
  });

  after(async () => {
    await cp?.stop();
  });

  test("the defaults and every documented combination pass a server-side dry run", async () => {
    // On a cluster without kube-eip, but for its namespaces, which a dry run cannot create
    // for the objects in them: the chart's own, marked for helm install to adopt them.
    await kubectl(
      ["apply", "--server-side", "-f", "-"],
      await template(["--show-only", "templates/namespaces.yaml"]),
    );
    for (const ns of ["kube-eip-system", "kube-eip-agent"]) {
      await kubectl([
        "annotate",
        "namespace",
        ns,
        `meta.helm.sh/release-name=${RELEASE}`,
        "meta.helm.sh/release-namespace=default",
      ]);
    }
    // The check can fail: without cert-manager's kinds its Certificates are refused.
    await assert.rejects(
      dryRun(await template(["--set", CERT_MANAGER])),
      /no matches for kind "(Issuer|Certificate)"|ensure CRDs are installed/,
    );
    await cp.applyManifests([fixture("cert-manager-crds.yaml")]);
    await cp.waitForCrdEstablished("certificates.cert-manager.io");
    await cp.waitForCrdEstablished("issuers.cert-manager.io");
    // monitoring.enabled=true: the Prometheus Operator's kinds.
    await cp.applyManifests([fixture("prometheus-operator-crds.yaml")]);
    await cp.waitForCrdEstablished("prometheusrules.monitoring.coreos.com");
    for (const args of [[], ...combinations]) {
      const { stderr } = await dryRun(await template(args));
      // kube-eip-system warns on anything short of the restricted Pod Security Standard.
      assert.doesNotMatch(stderr, /PodSecurity|would violate/i, `${args.join(" ")}: ${stderr}`);
    }
  });

  test("helm install stores the objects (adopting the namespaces); the CRD serves EipBindings", async () => {
    const { stdout } = await helm(["install", RELEASE, CHART_DIR, "--namespace", "default"]);
    assert.match(stdout, /STATUS: deployed/);
    assert.match(
      stdout,
      /eip-operator in kube-eip-system, eip_agent on every node in kube-eip-agent/,
    );
    assert.doesNotMatch(stdout, /WARNING/, "no plaintext warning with TLS on");
    const deployment = await getJson<{
      spec: { template: { spec: { containers: { args: string[] }[] } } };
    }>(["deployment", "-n", "kube-eip-system", "kube-eip-controller-manager"]);
    assert.ok(deployment.spec.template.spec.containers[0]?.args.includes("--leader-elect"));
    await getJson(["daemonset", "-n", "kube-eip-agent", "eip-agent"]);
    await getJson(["configmap", "-n", "kube-eip-agent", "eip-agent-cm"]);
    const ns = await getJson<{ metadata: { labels: Record<string, string> } }>([
      "namespace",
      "kube-eip-system",
    ]);
    assert.equal(ns.metadata.labels["pod-security.kubernetes.io/enforce"], "restricted");
    await cp.waitForCrdEstablished("eipbindings.extension.lucheng0127");
    await kubectl([
      "apply",
      "--server-side",
      "--dry-run=server",
      "-k",
      join(ROOT, "config/samples"),
    ]);
  });

  test("helm upgrade keeps the chart's CAs and certificate, and changes what the values change", async () => {
    const before = await tlsSecrets();
    for (const data of before) assert.ok(data["tls.crt"] && data["tls.key"] && data["ca.crt"]);
    const [agentCa, clientCa, operator] = before;
    assert.notEqual(agentCa?.["tls.crt"], clientCa?.["tls.crt"], "two CAs");
    assert.equal(operator?.["ca.crt"], agentCa?.["tls.crt"], "the operator trusts the agent CA");
    await helm([
      "upgrade",
      RELEASE,
      CHART_DIR,
      "--namespace",
      "default",
      "--set",
      "operator.logLevel=debug",
    ]);
    assert.deepEqual(await tlsSecrets(), before, "the same certificates after the upgrade");
    const deployment = await getJson<{
      spec: { template: { spec: { containers: { args: string[] }[] } } };
    }>(["deployment", "-n", "kube-eip-system", "kube-eip-controller-manager"]);
    assert.ok(deployment.spec.template.spec.containers[0]?.args.includes("--log-level=debug"));
  });

  test("the chart README's per-node step: kube-eip-certs --node from the installed CAs", async () => {
    // As the README says: each CA's tls.crt and tls.key out of its Secret (kubectl jsonpath),
    // then kube-eip-certs keeps those CAs and signs node-1's files with them.
    const dir = await mkdtemp(join(tmpdir(), "kube-eip-helm-pki-"));
    try {
      const files = certPaths(dir);
      for (const [ca, pair] of [
        ["agent", files.agentCa],
        ["client", files.clientCa],
      ] as const) {
        for (const [key, path] of [
          ["tls\\.crt", pair.cert],
          ["tls\\.key", pair.key],
        ] as const) {
          const { stdout } = await kubectl([
            "-n",
            "kube-eip-system",
            "get",
            "secret",
            `kube-eip-${ca}-ca`,
            "-o",
            `jsonpath={.data.${key}}`,
          ]);
          await writeFile(path, Buffer.from(stdout, "base64"), { mode: 0o600 });
        }
      }
      const made = await makeCerts(runner, { dir, nodes: [{ name: "node-1" }] });
      const node = made.nodes.get("node-1") ?? assert.fail("no node-1");
      const [agentCa, clientCa] = (await tlsSecrets()).map(
        (d) => new X509Certificate(Buffer.from(d["tls.crt"] ?? "", "base64")),
      );
      const agent = new X509Certificate(await readFile(node.cert));
      assert.equal(agent.subject, "CN=kube-eip-agent:node-1");
      assert.ok(agentCa && agent.verify(agentCa.publicKey), "signed by the installed agent CA");
      const nodeClientCa = new X509Certificate(await readFile(node.clientCa));
      assert.equal(
        nodeClientCa.fingerprint256,
        clientCa?.fingerprint256,
        "the installed client CA",
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("helm uninstall removes the workloads and leaves the CRD (crds.keep)", async () => {
    await helm(["uninstall", RELEASE, "--namespace", "default"]);
    await assert.rejects(
      kubectl(["get", "deployment", "-n", "kube-eip-system", "kube-eip-controller-manager"]),
      /NotFound/,
    );
    await assert.rejects(
      kubectl(["get", "daemonset", "-n", "kube-eip-agent", "eip-agent"]),
      /NotFound/,
    );
    await getJson(["crd", "eipbindings.extension.lucheng0127"]);
  });
});
