// kube-eip-certs with the real openssl: what it makes, that a second run keeps it, two
// separate trust roots (openssl verify), per-node agent certificates that name their node.
// The certificates at work, in real agents and the operator, are tested in the lab
// (e2e/trust.privileged.test.ts).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ExecRunner } from "../kernel/runner.js";
import { runCertsCli } from "./certs-cli.js";
import { certPaths, makeCerts, secretsManifest, type CertFiles } from "./certs.js";

const runner = new ExecRunner();
let dir: string;
let files: CertFiles;
const nodes = [{ name: "node-1", ip: "172.16.0.11" }, { name: "node-2" }];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "kube-eip-certs-"));
  files = await makeCerts(runner, { dir: join(dir, "certs"), nodes });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const text = async (cert: string) =>
  (await runner.run("openssl", ["x509", "-in", cert, "-noout", "-text"])).stdout;

async function verifies(ca: string, cert: string): Promise<boolean> {
  try {
    await runner.run("openssl", ["verify", "-CAfile", ca, cert]);
    return true;
  } catch {
    return false;
  }
}

test("the files: two CAs, the operator's, an administrator's, one per node; keys only for root", async () => {
  assert.deepEqual(files, certPaths(join(dir, "certs"), ["node-1", "node-2"]));
  const node1 = files.nodes.get("node-1") ?? assert.fail();
  for (const pair of [files.agentCa, files.clientCa, files.operator, files.admin, node1]) {
    assert.equal((await stat(pair.key)).mode & 0o777, 0o600, pair.key);
    assert.match(await readFile(pair.cert, "utf8"), /^-----BEGIN CERTIFICATE-----/);
  }
  const t1 = await text(node1.cert);
  assert.match(t1, /Subject: CN ?= ?kube-eip-agent:node-1\n/);
  assert.match(t1, /DNS:node-1, IP Address:172\.16\.0\.11/);
  assert.match(t1, /TLS Web Server Authentication/);
  const t2 = await text(files.nodes.get("node-2")?.cert ?? "");
  assert.match(t2, /Subject: CN ?= ?kube-eip-agent:node-2\n/);
  assert.doesNotMatch(t2, /IP Address/);
  assert.notEqual(
    await readFile(node1.key, "utf8"),
    await readFile(files.nodes.get("node-2")?.key ?? "", "utf8"),
  );
  assert.equal(await readFile(node1.clientCa, "utf8"), await readFile(files.clientCa.cert, "utf8"));
  assert.match(
    await text(files.operator.cert),
    /Subject: CN ?= ?kube-eip-operator\n[^]*TLS Web Client Authentication/,
  );
  assert.match(await text(files.admin.cert), /Subject: CN ?= ?kube-eip-admin\n/);
});

test("separate trust roots: agents only under the agent CA, clients only under the client CA", async () => {
  const node1 = files.nodes.get("node-1") ?? assert.fail();
  assert.equal(await verifies(files.agentCa.cert, node1.cert), true);
  assert.equal(await verifies(files.clientCa.cert, node1.cert), false, "an agent key is no client");
  assert.equal(await verifies(files.clientCa.cert, files.operator.cert), true);
  assert.equal(
    await verifies(files.agentCa.cert, files.operator.cert),
    false,
    "a client key is no agent",
  );
  assert.equal(await verifies(files.agentCa.cert, files.admin.cert), false);
});

test("a second run keeps every file", async () => {
  const all = (f: CertFiles) => [f.agentCa, f.clientCa, f.operator, f.admin, ...f.nodes.values()];
  const before = await Promise.all(all(files).map((p) => readFile(p.cert, "utf8")));
  const again = await makeCerts(runner, { dir: join(dir, "certs"), nodes });
  assert.deepEqual(await Promise.all(all(again).map((p) => readFile(p.cert, "utf8"))), before);
});

test("the operator's Secret: its client certificate and the agent CA", async () => {
  const list = JSON.parse(await secretsManifest(files)) as {
    kind: string;
    items: {
      metadata: { name: string; namespace: string };
      type: string;
      data: Record<string, string>;
    }[];
  };
  assert.equal(list.kind, "List");
  const decode = (s: string | undefined) => Buffer.from(s ?? "", "base64").toString();
  assert.equal(list.items.length, 1, "no agent key in any Secret");
  const s = list.items[0] ?? assert.fail();
  assert.deepEqual(s.metadata, { name: "kube-eip-operator-tls", namespace: "kube-eip-system" });
  assert.equal(s.type, "kubernetes.io/tls");
  assert.equal(decode(s.data["tls.crt"]), await readFile(files.operator.cert, "utf8"));
  assert.equal(decode(s.data["tls.key"]), await readFile(files.operator.key, "utf8"));
  assert.equal(decode(s.data["ca.crt"]), await readFile(files.agentCa.cert, "utf8"));
});

test("the command line: --node NAME[=IP], prints the Secret, says where the node files go; usage errors", async () => {
  let out = "";
  let err = "";
  const io = { out: (t: string) => (out += t), err: (t: string) => (err += t) };
  const d = join(dir, "certs");
  assert.equal(await runCertsCli(["--dir", d, "--node", "node-1=172.16.0.11"], io, runner), 0);
  assert.equal(out, await secretsManifest(files));
  assert.match(err, /copy .*nodes\/node-1\/ to each node's \/etc\/kube-eip\/pki/);
  assert.equal(await runCertsCli([], io, runner), 2);
  assert.equal(await runCertsCli(["--dir", dir, "--days", "0"], io, runner), 2);
  err = "";
  assert.equal(await runCertsCli(["--dir", d, "--node", "Bad_Name"], io, runner), 1);
  assert.match(err, /"Bad_Name" is not a node name/);
  assert.equal(await runCertsCli(["--dir", d, "--node", "n=1.2.3"], io, runner), 1);
});
