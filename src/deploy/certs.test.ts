// kube-eip-certs with the real openssl: what it makes, that a second run keeps it, and that
// the certificates do what the manifests count on, checked by real TLS handshakes: a client
// that dials an address and verifies eip-agent.kube-eip-agent is served; one that verifies
// the address is not; the agents refuse clients the CA did not sign.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer, type Server } from "node:tls";
import { ExecRunner } from "../kernel/runner.js";
import { runCertsCli } from "./certs-cli.js";
import {
  AGENT_SERVER_NAME,
  certPaths,
  makeCerts,
  secretsManifest,
  type CertFiles,
} from "./certs.js";

const runner = new ExecRunner();
let dir: string;
let files: CertFiles;
let server: Server;
let port: number;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "kube-eip-certs-"));
  files = await makeCerts(runner, { dir: join(dir, "certs") });
  server = createServer({
    cert: await readFile(files.agent.cert),
    key: await readFile(files.agent.key),
    ca: await readFile(files.ca.cert),
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
  await rm(dir, { recursive: true, force: true });
});

/** Dials 127.0.0.1 as the operator would dial a node; resolves with what the server said. */
async function handshake(client: { cert: string; key: string }, servername?: string) {
  const [ca, cert, key] = await Promise.all([
    readFile(files.ca.cert),
    readFile(client.cert),
    readFile(client.key),
  ]);
  return new Promise<string>((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, ca, cert, key, servername });
    let data = "";
    socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
    socket.on("end", () => resolve(data));
    socket.on("error", reject);
  });
}

test("the files: a CA, the agents', the operator's and an administrator's; keys only for root", async () => {
  assert.deepEqual(files, certPaths(join(dir, "certs")));
  for (const pair of [files.ca, files.agent, files.operator, files.admin]) {
    assert.equal((await stat(pair.key)).mode & 0o777, 0o600, pair.key);
    assert.match(await readFile(pair.cert, "utf8"), /^-----BEGIN CERTIFICATE-----/);
  }
  const text = (await runner.run("openssl", ["x509", "-in", files.agent.cert, "-noout", "-text"]))
    .stdout;
  assert.match(text, /DNS:eip-agent\.kube-eip-agent/);
  assert.doesNotMatch(text, /IP Address:/, "no node address in the agents' certificate");
  assert.match(text, /TLS Web Server Authentication/);
});

test("a second run keeps every file", async () => {
  const before = await Promise.all(
    Object.values(files).map(async (p: { cert: string }) => readFile(p.cert, "utf8")),
  );
  await makeCerts(runner, { dir: join(dir, "certs") });
  const again = await Promise.all(
    Object.values(files).map(async (p: { cert: string }) => readFile(p.cert, "utf8")),
  );
  assert.deepEqual(again, before);
});

test("dialing an address and verifying eip-agent.kube-eip-agent: the operator and eipctl get in", async () => {
  assert.equal(await handshake(files.operator, AGENT_SERVER_NAME), "ok");
  assert.equal(await handshake(files.admin, AGENT_SERVER_NAME), "ok");
});

test("verifying the address itself fails: the certificate does not name it", async () => {
  await assert.rejects(handshake(files.operator), /IP: 127\.0\.0\.1 is not in the cert's list/);
});

test("a client whose certificate another CA signed is refused by the agent", async () => {
  const other = await makeCerts(runner, { dir: join(dir, "other") });
  // TLS 1.3: the client may finish its side before the server refuses it; it never gets "ok".
  const said = await handshake(other.operator, AGENT_SERVER_NAME).catch(() => "refused");
  assert.notEqual(said, "ok");
});

test("the Secrets: kubernetes.io/tls with tls.crt, tls.key and ca.crt, in each namespace", async () => {
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
  const ca = await readFile(files.ca.cert, "utf8");
  const byName = new Map(list.items.map((i) => [i.metadata.name, i]));
  for (const [name, namespace, pair] of [
    ["kube-eip-agent-tls", "kube-eip-agent", files.agent],
    ["kube-eip-operator-tls", "kube-eip-system", files.operator],
  ] as const) {
    const s = byName.get(name) ?? assert.fail(name);
    assert.equal(s.metadata.namespace, namespace);
    assert.equal(s.type, "kubernetes.io/tls");
    assert.equal(decode(s.data["tls.crt"]), await readFile(pair.cert, "utf8"));
    assert.equal(decode(s.data["tls.key"]), await readFile(pair.key, "utf8"));
    assert.equal(decode(s.data["ca.crt"]), ca);
  }
});

test("the command line prints the Secrets and says what to give eipctl; usage errors exit 2", async () => {
  let out = "";
  let err = "";
  const io = { out: (t: string) => (out += t), err: (t: string) => (err += t) };
  assert.equal(await runCertsCli(["--dir", join(dir, "certs")], io, runner), 0);
  assert.equal(out, await secretsManifest(files));
  assert.match(err, /--tls-server-name eip-agent\.kube-eip-agent/);
  assert.equal(await runCertsCli([], io, runner), 2);
  assert.equal(await runCertsCli(["--dir", dir, "--days", "0"], io, runner), 2);
});
