// The Helm chart against the kustomize trees it must match, with the real helm (built by
// scripts/helm-build.sh) and kubectl's kustomize (scripts/kube-build.sh): `helm lint`; the
// defaults render the objects of config/default and config/agent, object by object, under
// normalise() only; the switches render what config/plaintext, config/certmanager and
// config/plaintext-agent, config/certmanager and config/gobgp-sidecar do; the chart's CRD is
// config's; and the CAs the chart makes, with a node's certificate that kube-eip-certs --node
// makes from them, carry a real TLS handshake as the operator dials an agent.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer, type Server } from "node:tls";
import { ExecRunner } from "../kernel/runner.js";
import { findHelm } from "../kube-lab/helm.js";
import { findKubeBinaries } from "../kube-lab/binaries.js";
import { agentCheck } from "../operator/agent-identity.js";
import { certPaths, makeCerts, type NodePki } from "./certs.js";
import {
  CHART_DIR,
  REPO_ROOT,
  normalise,
  objectKey,
  parseObjects,
  renderChart,
  renderKustomize,
  type KubeObject,
} from "./chart.js";

const runner = new ExecRunner();
let helm: string;
let kubectl: string;
let version: string;

before(async () => {
  helm = await findHelm();
  kubectl = (await findKubeBinaries()).kubectl;
  version = (
    JSON.parse(await readFile(join(REPO_ROOT, "package.json"), "utf8")) as {
      version: string;
    }
  ).version;
});

const kustomizeTree = async (tree: string) =>
  parseObjects((await runner.run(kubectl, ["kustomize", join(REPO_ROOT, "config", tree)])).stdout);

/** Both lists hold the same objects (by kind/namespace/name), equal after normalise(). */
function assertSameObjects(chart: KubeObject[], kustomize: KubeObject[], what: string) {
  const byKey = (objects: KubeObject[]) => new Map(objects.map((o) => [objectKey(o), o]));
  const c = byKey(chart);
  const k = byKey(kustomize);
  assert.deepEqual([...c.keys()].sort(), [...k.keys()].sort(), `${what}: the same objects`);
  for (const [key, object] of k) {
    assert.deepEqual(normalise(c.get(key) as KubeObject), normalise(object), `${what}: ${key}`);
  }
}

const isTlsSecret = (o: KubeObject) => o.kind === "Secret" && o.type === "kubernetes.io/tls";
const secretData = (o: KubeObject | undefined, key: string) =>
  Buffer.from((o as { data: Record<string, string> } | undefined)?.data[key] ?? "", "base64");

test("helm lint --strict passes", async () => {
  const { stdout } = await runner.run(helm, ["lint", "--strict", CHART_DIR]);
  assert.match(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
});

test("helm package makes an archive that renders the same objects as the folder", async () => {
  const dir = await mkdtemp(join(tmpdir(), "kube-eip-chart-"));
  try {
    await runner.run(helm, ["package", CHART_DIR, "--destination", dir]);
    const [archive = assert.fail("no archive")] = await readdir(dir);
    const { stdout } = await runner.run(helm, ["template", "kube-eip", join(dir, archive)]);
    const keys = (objects: KubeObject[]) => objects.map(objectKey).sort();
    assert.deepEqual(keys(parseObjects(stdout)), keys(await renderChart(runner, helm)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("the chart's version is the package's, and its default images the Makefile's", async () => {
  const chartYaml = await readFile(join(CHART_DIR, "Chart.yaml"), "utf8");
  assert.match(chartYaml, new RegExp(`^appVersion: "${version}"$`, "m"));
  const makefile = await readFile(join(REPO_ROOT, "Makefile"), "utf8");
  assert.match(makefile, new RegExp(`^VERSION \\?= ${version}$`, "m"));
  assert.match(makefile, /^IMG \?= kube-eip\/eip-operator:\$\(VERSION\)$/m);
  assert.match(makefile, /^AGENT_IMG \?= kube-eip\/eip-agent:\$\(VERSION\)$/m);
});

test("the defaults render the objects of make deploy and make deploy-agent, object by object", async () => {
  const chart = await renderChart(runner, helm);
  const kustomize = await renderKustomize(runner, kubectl, {
    operator: `kube-eip/eip-operator:${version}`,
    agent: `kube-eip/eip-agent:${version}`,
  });
  assert.ok(kustomize.length >= 15, "kustomize rendered the trees");
  // The CAs' and the operator's Secrets, which make certs makes beside kustomize's trees,
  // are checked below.
  assertSameObjects(
    chart.filter((o) => !isTlsSecret(o)),
    kustomize,
    "config/default + config/agent",
  );
  // normalise() takes away only Helm's labels: the chart's objects carry kustomize's too.
  for (const o of chart) {
    assert.equal(o.metadata.labels?.["app.kubernetes.io/part-of"], "kube-eip", objectKey(o));
    assert.equal(o.metadata.labels?.["app.kubernetes.io/managed-by"], "Helm", objectKey(o));
  }
});

test("normalise() does not hide a difference that matters", () => {
  const object: KubeObject = {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: "x", labels: { "helm.sh/chart": "kube-eip-0.1.0", keep: "me" } },
    data: { a: "1" },
  };
  const other = structuredClone(object);
  other.metadata.labels = { keep: "changed" };
  assert.notDeepEqual(normalise(object), normalise(other));
  assert.notDeepEqual(normalise(object), normalise({ ...object, data: { a: "2" } }));
  assert.deepEqual(normalise(object).metadata.labels, { keep: "me" });
});

test("tls.enabled=false renders config/plaintext and config/plaintext-agent", async () => {
  const chart = await renderChart(runner, helm, ["--set", "tls.enabled=false"]);
  assert.equal(chart.filter(isTlsSecret).length, 0, "no certificates");
  const plaintext = [
    ...(await kustomizeTree("plaintext")),
    ...(await kustomizeTree("plaintext-agent")),
  ];
  const keys = new Set(plaintext.map(objectKey));
  const rendered = chart.filter((o) => keys.has(objectKey(o)));
  // The trees leave the image names unset: the one thing set apart here.
  assert.match(JSON.stringify(rendered), /"image":"kube-eip\/eip-operator:/);
  assert.match(JSON.stringify(rendered), /"image":"kube-eip\/eip-agent:/);
  const fromKustomize = JSON.parse(
    JSON.stringify(plaintext)
      .replace('"image":"eip-operator"', `"image":"kube-eip/eip-operator:${version}"`)
      .replaceAll('"image":"eip-agent"', `"image":"kube-eip/eip-agent:${version}"`),
  ) as KubeObject[];
  assertSameObjects(rendered, fromKustomize, "config/plaintext + config/plaintext-agent");
});

test("tls.certManager.enabled=true renders config/certmanager instead of Secrets", async () => {
  // config/certmanager's node Certificate is a template, for a node named node-1.
  const chart = await renderChart(runner, helm, [
    "--set",
    "tls.certManager.enabled=true",
    "--set",
    "tls.certManager.nodes={node-1}",
  ]);
  assert.equal(chart.filter(isTlsSecret).length, 0, "cert-manager makes the Secrets");
  // config/certmanager's objects have no part-of label; the chart's, as all its objects, do.
  const kustomize = (await kustomizeTree("certmanager")).map((o) => {
    o.metadata.labels = { "app.kubernetes.io/part-of": "kube-eip" };
    return o;
  });
  assertSameObjects(
    chart.filter((o) => o.apiVersion.startsWith("cert-manager.io/")),
    kustomize,
    "config/certmanager",
  );
});

test("monitoring.enabled=true renders config/prometheus, in the chart's namespaces", async () => {
  const monitoring = (o: KubeObject) =>
    o.apiVersion.startsWith("monitoring.coreos.com/") || o.metadata.name === "kube-eip-dashboard";
  const chart = await renderChart(runner, helm, ["--set", "monitoring.enabled=true"]);
  assertSameObjects(
    chart.filter(monitoring),
    await kustomizeTree("prometheus"),
    "config/prometheus",
  );
  const moved = await renderChart(runner, helm, [
    "--set",
    "monitoring.enabled=true",
    "--set",
    "namespaces.operator=ops",
    "--set",
    "namespaces.agent=nodes",
  ]);
  assert.deepEqual(
    moved
      .filter(monitoring)
      .map((o) => `${o.kind} ${o.metadata.namespace ?? ""}`)
      .sort(),
    ["ConfigMap ops", "PodMonitor nodes", "PrometheusRule ops", "ServiceMonitor ops"],
  );
});

test("agent.gobgpSidecar.enabled=true renders config/gobgp-sidecar's DaemonSet", async () => {
  const chart = await renderChart(runner, helm, ["--set", "agent.gobgpSidecar.enabled=true"]);
  const ds = (objects: KubeObject[]) =>
    objects
      .filter((o) => o.kind === "DaemonSet")
      .map((o) => {
        const text = JSON.stringify(o).replaceAll(
          `"image":"kube-eip/eip-agent:${version}"`,
          '"image":"eip-agent"',
        );
        return JSON.parse(text) as KubeObject;
      });
  assertSameObjects(ds(chart), ds(await kustomizeTree("gobgp-sidecar")), "config/gobgp-sidecar");
});

test("the chart's CRD files are config/crd's, byte for byte", async () => {
  const names = (await readdir(join(REPO_ROOT, "config", "crd", "bases"))).sort();
  assert.deepEqual((await readdir(join(CHART_DIR, "files"))).sort(), names);
  for (const name of names) {
    assert.equal(
      await readFile(join(CHART_DIR, "files", name), "utf8"),
      await readFile(join(REPO_ROOT, "config", "crd", "bases", name), "utf8"),
      name,
    );
  }
});

describe("the certificates the chart makes, and a node's that kube-eip-certs makes from its CAs", () => {
  let server: Server;
  let port: number;
  let secrets: Map<string, KubeObject>;
  let allowed: string[];
  let dir: string;
  let node: NodePki;

  before(async () => {
    const chart = await renderChart(runner, helm);
    secrets = new Map(chart.filter(isTlsSecret).map((o) => [o.metadata.name, o]));
    const cm = chart.find((o) => o.kind === "ConfigMap") as unknown as {
      data: Record<string, string>;
    };
    allowed = (cm.data["tls_allowed_clients"] ?? "").split(",");
    // What the chart's README says to do for each node: the CA Secrets into a folder, then
    // kube-eip-certs --node, which keeps the CAs it finds there.
    dir = await mkdtemp(join(tmpdir(), "kube-eip-chart-pki-"));
    const files = certPaths(dir);
    for (const [secret, pair] of [
      ["kube-eip-agent-ca", files.agentCa],
      ["kube-eip-client-ca", files.clientCa],
    ] as const) {
      await writeFile(pair.cert, secretData(secrets.get(secret), "tls.crt"));
      await writeFile(pair.key, secretData(secrets.get(secret), "tls.key"), { mode: 0o600 });
    }
    const made = await makeCerts(runner, { dir, nodes: [{ name: "node-1", ip: "127.0.0.1" }] });
    node = made.nodes.get("node-1") ?? assert.fail("no node-1");
    // The agent's side, as the DaemonSet's files give it: its node's certificate, and
    // client certificates of the client CA only.
    server = createServer({
      cert: await readFile(node.cert),
      key: await readFile(node.key),
      ca: await readFile(node.clientCa),
      requestCert: true,
      rejectUnauthorized: true,
    });
    server.on("secureConnection", (socket) => socket.end("ok"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    port = typeof address === "object" && address ? address.port : 0;
  });

  after(async () => {
    await new Promise((resolve) => server?.close(resolve));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Dials 127.0.0.1 as the operator dials node `nodeName`'s InternalIP (agentCheck). */
  const handshake = (client: KubeObject | undefined, nodeName = "node-1") =>
    new Promise<string>((resolve, reject) => {
      const socket = connect({
        host: "127.0.0.1",
        port,
        ca: secretData(client, "ca.crt"),
        cert: secretData(client, "tls.crt"),
        key: secretData(client, "tls.key"),
        checkServerIdentity: agentCheck(nodeName, "127.0.0.1"),
      });
      let data = "";
      socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
      socket.on("end", () => resolve(data));
      socket.on("error", reject);
    });

  test("the Secrets are make certs' and cert-manager's layout, in the operator's namespace", () => {
    assert.deepEqual(
      [...secrets.keys()].sort(),
      ["kube-eip-agent-ca", "kube-eip-client-ca", "kube-eip-operator-tls"],
      "no agent Secret: each node's key stays on its node",
    );
    for (const s of secrets.values()) {
      assert.equal(s.metadata.namespace, "kube-eip-system");
      assert.deepEqual(Object.keys(s.data as object).sort(), ["ca.crt", "tls.crt", "tls.key"]);
    }
  });

  test("two CAs: the operator's certificate is the client CA's, its ca.crt the agent CA", () => {
    const cert = (name: string, key = "tls.crt") =>
      new X509Certificate(secretData(secrets.get(name), key));
    const agentCa = cert("kube-eip-agent-ca");
    const clientCa = cert("kube-eip-client-ca");
    const operator = cert("kube-eip-operator-tls");
    assert.ok(agentCa.ca && clientCa.ca);
    assert.notEqual(agentCa.fingerprint256, clientCa.fingerprint256);
    assert.ok(operator.verify(clientCa.publicKey), "signed by the client CA");
    assert.ok(!operator.verify(agentCa.publicKey), "not by the agent CA");
    assert.equal(cert("kube-eip-operator-tls", "ca.crt").fingerprint256, agentCa.fingerprint256);
    assert.equal(operator.subject, "CN=kube-eip-operator");
    assert.ok(allowed.includes("kube-eip-operator"), "the agents' allow-list names it");
  });

  test("the operator's certificate gets in, and it accepts node-1's agent", async () => {
    assert.equal(await handshake(secrets.get("kube-eip-operator-tls")), "ok");
  });

  test("the operator refuses the same agent when it dials node-2: the identity is node-1's", async () => {
    await assert.rejects(
      handshake(secrets.get("kube-eip-operator-tls"), "node-2"),
      /agent identity mismatch: .*kube-eip-agent:node-1.*not kube-eip-agent:node-2/,
    );
  });

  test("a client of another render's CAs is refused: each install has CAs of its own", async () => {
    const other = (await renderChart(runner, helm)).find(
      (o) => o.metadata.name === "kube-eip-operator-tls",
    );
    const said = await handshake(other).catch(() => "refused");
    assert.notEqual(said, "ok");
  });
});
