// The Helm chart against the kustomize trees it must match, with the real helm (built by
// scripts/helm-build.sh) and kubectl's kustomize (scripts/kube-build.sh): `helm lint`; the
// defaults render the objects of config/default and config/agent, object by object, under
// normalise() only; the switches render what config/plaintext, config/certmanager and
// config/gobgp-sidecar do; the chart's CRD is config's; and the certificates the chart makes
// carry a real TLS handshake as the operator dials an agent.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer, type Server } from "node:tls";
import { ExecRunner } from "../kernel/runner.js";
import { findHelm } from "../kube-lab/helm.js";
import { findKubeBinaries } from "../kube-lab/binaries.js";
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

const isTlsSecret = (o: KubeObject) => o.kind === "Secret" && o.metadata.name.endsWith("-tls");
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
  // The TLS Secrets, which make certs makes beside kustomize's trees, are checked below.
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

test("tls.enabled=false renders config/plaintext, and empties the agents' tls_* keys", async () => {
  const chart = await renderChart(runner, helm, ["--set", "tls.enabled=false"]);
  assert.equal(chart.filter(isTlsSecret).length, 0, "no certificates");
  const plaintext = await kustomizeTree("plaintext");
  const keys = new Set(plaintext.map(objectKey));
  const operatorSide = chart.filter((o) => keys.has(objectKey(o)));
  // config/plaintext leaves the image name unset: the one thing set apart here.
  const deployment = operatorSide.find((o) => o.kind === "Deployment");
  assert.match(JSON.stringify(deployment), /"image":"kube-eip\/eip-operator:/);
  const fromKustomize = JSON.parse(
    JSON.stringify(plaintext).replace(
      '"image":"eip-operator"',
      `"image":"kube-eip/eip-operator:${version}"`,
    ),
  ) as KubeObject[];
  assertSameObjects(operatorSide, fromKustomize, "config/plaintext");
  const cm = chart.find((o) => o.kind === "ConfigMap") as unknown as {
    data: Record<string, string>;
  };
  assert.deepEqual(
    [cm.data["tls_cert"], cm.data["tls_key"], cm.data["tls_client_ca"]],
    ["", "", ""],
  );
});

test("tls.certManager.enabled=true renders config/certmanager instead of Secrets", async () => {
  const chart = await renderChart(runner, helm, ["--set", "tls.certManager.enabled=true"]);
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

describe("the certificates the chart makes", () => {
  let server: Server;
  let port: number;
  let secrets: Map<string, KubeObject>;

  before(async () => {
    const chart = await renderChart(runner, helm);
    secrets = new Map(chart.filter(isTlsSecret).map((o) => [o.metadata.name, o]));
    const agent = secrets.get("kube-eip-agent-tls");
    server = createServer({
      cert: secretData(agent, "tls.crt"),
      key: secretData(agent, "tls.key"),
      ca: secretData(agent, "ca.crt"),
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
  });

  /** Dials 127.0.0.1 as the operator dials a node's InternalIP. */
  const handshake = (client: KubeObject | undefined, servername?: string) =>
    new Promise<string>((resolve, reject) => {
      const socket = connect({
        host: "127.0.0.1",
        port,
        ca: secretData(client, "ca.crt"),
        cert: secretData(client, "tls.crt"),
        key: secretData(client, "tls.key"),
        servername,
      });
      let data = "";
      socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
      socket.on("end", () => resolve(data));
      socket.on("error", reject);
    });

  test("the Secrets are make certs' layout, in the namespaces the pods mount them from", () => {
    for (const [name, namespace] of [
      ["kube-eip-agent-tls", "kube-eip-agent"],
      ["kube-eip-operator-tls", "kube-eip-system"],
    ]) {
      const s = secrets.get(name as string) as KubeObject & { type: string; data: object };
      assert.equal(s.metadata.namespace, namespace);
      assert.equal(s.type, "kubernetes.io/tls");
      assert.deepEqual(Object.keys(s.data).sort(), ["ca.crt", "tls.crt", "tls.key"]);
    }
  });

  test("the operator's certificate gets in, verifying eip-agent.kube-eip-agent", async () => {
    assert.equal(
      await handshake(secrets.get("kube-eip-operator-tls"), "eip-agent.kube-eip-agent"),
      "ok",
    );
  });

  test("verifying the node's address instead fails: the certificate does not name it", async () => {
    await assert.rejects(
      handshake(secrets.get("kube-eip-operator-tls")),
      /IP: 127\.0\.0\.1 is not in the cert's list/,
    );
  });

  test("a client of another render's CA is refused: each install has a CA of its own", async () => {
    const other = (await renderChart(runner, helm)).find(
      (o) => o.metadata.name === "kube-eip-operator-tls",
    );
    const said = await handshake(other, "eip-agent.kube-eip-agent").catch(() => "refused");
    assert.notEqual(said, "ok");
  });
});
