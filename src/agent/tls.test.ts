// TLS on the agent's gRPC port: with a client CA set, only clients holding a certificate
// that CA signed get an answer. Certificates are made by the real openssl for each run.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type * as grpc from "@grpc/grpc-js";
import { AgentClient } from "../common/agent-api.js";
import { runEipctl } from "../cli/eipctl.js";
import { Dataplane } from "./dataplane.js";
import { bindServer, serverCredentials } from "./server.js";
import { testAgentServer } from "./test-agent-server.js";

const run = promisify(execFile);
const allow = { clients: ["operator"], readers: ["reader"] };

let dir: string;
let server: grpc.Server;
let dataplane: Dataplane;
let target: string;

async function openssl(...args: string[]) {
  await run("openssl", args, { cwd: dir });
}

/** A CA, and a certificate it signs for `name` (with `san` as subjectAltName). */
async function issue(ca: string, name: string, san: string) {
  await openssl(
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-subj",
    `/CN=${name}`,
    "-out",
    `${name}.csr`,
  );
  await writeFile(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
  await openssl(
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${ca}.crt`,
    "-CAkey",
    `${ca}.key`,
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.crt`,
  );
}

async function makeCa(name: string) {
  await openssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-subj",
    `/CN=${name}`,
    "-days",
    "1",
    "-out",
    `${name}.crt`,
  );
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "keip-tls-"));
  await makeCa("ca");
  await makeCa("other-ca");
  await issue("ca", "agent", "IP:127.0.0.1,DNS:eip-agent");
  await issue("ca", "operator", "DNS:operator");
  await issue("ca", "reader", "DNS:reader");
  await issue("ca", "mallory", "DNS:mallory");
  await issue("other-ca", "intruder", "DNS:intruder");
  ({ server, dataplane } = testAgentServer(dir, allow));
  const creds = serverCredentials({
    cert: join(dir, "agent.crt"),
    key: join(dir, "agent.key"),
    clientCa: join(dir, "ca.crt"),
    allow,
  });
  target = `127.0.0.1:${await bindServer(server, "127.0.0.1:0", creds)}`;
});

after(async () => {
  await dataplane.stop();
  server.forceShutdown();
  await rm(dir, { recursive: true, force: true });
});

const file = (name: string) => join(dir, name);

test("a client with a certificate signed by the client CA is served", async () => {
  const client = new AgentClient(target, {
    tls: { ca: file("ca.crt"), cert: file("operator.crt"), key: file("operator.key") },
  });
  const rsp = await client.eipOperate(
    { action: "bind", eipAddr: "192.168.18.100", vmiAddr: "10.244.1.10" },
    5000,
  );
  assert.equal(rsp.result, "Succeed");
  client.close();
});

/** The error a TLS handshake with the agent ends in, as node:tls reports the agent's alert. */
export function handshakeError(
  address: string,
  options: { ca: string; cert?: string; key?: string },
): Promise<string> {
  const [host, port] = [
    address.slice(0, address.lastIndexOf(":")),
    address.slice(address.lastIndexOf(":") + 1),
  ];
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host,
      port: Number(port),
      ca: readFileSync(options.ca),
      ...(options.cert
        ? { cert: readFileSync(options.cert), key: readFileSync(options.key ?? "") }
        : {}),
      checkServerIdentity: () => undefined,
      ALPNProtocols: ["h2"],
      // TLS 1.2 checks the client's certificate within the handshake, so the agent's alert
      // is the handshake's error (with 1.3 it may come after, as a bare close).
      maxVersion: "TLSv1.2",
    });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve("no error: the agent kept the connection");
    }, 1000);
    socket.resume(); // read, so that the agent's alert arrives
    socket.on("error", (err) => {
      clearTimeout(timer);
      resolve(err.message);
    });
  });
}

test("a client without a certificate or with one of another CA is refused in the handshake, saying why", async () => {
  const noCert = new AgentClient(target, { tls: { ca: file("ca.crt") } });
  await assert.rejects(noCert.listBindings(3000), (err: grpc.ServiceError) => {
    assert.equal(err.code, 14);
    assert.match(err.details, /alert certificate required/);
    return true;
  });
  noCert.close();
  assert.match(
    await handshakeError(target, {
      ca: file("ca.crt"),
      cert: file("intruder.crt"),
      key: file("intruder.key"),
    }),
    // Node's TLS server checks the chain after OpenSSL's handshake and drops the connection
    // without an alert: the client learns only that no secure connection was made.
    /disconnected before secure TLS connection was established/,
  );
  assert.match(
    await handshakeError(target, {
      ca: file("ca.crt"),
      cert: file("operator.crt"),
      key: file("operator.key"),
    }),
    /^no error/,
    "the same probe with the right CA's certificate is let in",
  );
});

test("a plaintext client gets no answer from the TLS port", async () => {
  const plain = new AgentClient(target);
  await assert.rejects(plain.listBindings(3000), (err: grpc.ServiceError) => {
    assert.equal(err.code, 14, "UNAVAILABLE: no gRPC over plaintext");
    return true;
  });
  plain.close();
});

const as = (name: string) =>
  new AgentClient(target, {
    tls: { ca: file("ca.crt"), cert: file(`${name}.crt`), key: file(`${name}.key`) },
  });

test("a certificate the CA signed for a name not allowed cannot bind, unbind or list", async () => {
  const mallory = as("mallory");
  for (const action of ["bind", "unbind"]) {
    const rsp = await mallory.eipOperate(
      { action, eipAddr: "192.168.18.100", vmiAddr: "10.244.1.10" },
      5000,
    );
    assert.equal(rsp.result, "Failed");
    assert.equal(rsp.errPhase, 0);
    assert.match(rsp.reason, /client identity "mallory" \(certificate CN\) is not allowed to bind/);
  }
  const other = await mallory.eipOperate(
    { action: "bind", eipAddr: "192.168.18.101", vmiAddr: "10.244.1.11" },
    5000,
  );
  assert.equal(other.result, "Failed");
  for (const call of [() => mallory.listBindings(5000), () => mallory.listBgpPeers(5000)]) {
    await assert.rejects(call(), (err: grpc.ServiceError) => {
      assert.equal(err.code, 7, "PERMISSION_DENIED");
      assert.match(err.details, /client identity "mallory" .* not allowed to read/);
      return true;
    });
  }
  mallory.close();
  const operator = as("operator");
  assert.deepEqual(
    (await operator.listBindings(5000)).bindings.map((b) => b.eipAddr),
    ["192.168.18.100"],
    "mallory's unbind changed nothing and its bind of .101 made nothing",
  );
  operator.close();
});

test("a reader may list, but not bind or unbind", async () => {
  const reader = as("reader");
  assert.deepEqual(
    (await reader.listBindings(5000)).bindings.map((b) => b.eipAddr),
    ["192.168.18.100"],
  );
  const rsp = await reader.eipOperate(
    { action: "unbind", eipAddr: "192.168.18.100", vmiAddr: "10.244.1.10" },
    5000,
  );
  assert.equal(rsp.result, "Failed");
  assert.match(rsp.reason, /client identity "reader" .* not allowed to bind or unbind/);
  assert.equal((await reader.listBindings(5000)).bindings.length, 1, "still bound");
  reader.close();
});

test("eipctl speaks TLS with its flags", async () => {
  let out = "";
  const code = await runEipctl(
    [
      "--target",
      target,
      "--tls-ca",
      file("ca.crt"),
      "--tls-cert",
      file("operator.crt"),
      "--tls-key",
      file("operator.key"),
      "--action",
      "list",
      "--output",
      "json",
    ],
    { out: (t) => (out += t), err: () => {} },
  );
  assert.equal(code, 0);
  assert.deepEqual(
    (JSON.parse(out) as { bindings: { eipAddr: string }[] }).bindings.map((b) => b.eipAddr),
    ["192.168.18.100"],
  );
  const refused = await runEipctl(
    ["--target", target, "--tls-ca", file("ca.crt"), "--timeout", "3", "--action", "list"],
    {
      out: () => {},
      err: () => {},
    },
  );
  assert.equal(refused, 3);
});

test("eipctl dials plaintext beyond loopback only with --insecure, and then warns", async () => {
  let err = "";
  const io = { out: () => {}, err: (t: string) => (err += t) };
  const list = ["--target", "192.0.2.1:6127", "--timeout", "1", "--action", "list"];
  assert.equal(await runEipctl(list, io), 2);
  assert.match(err, /refusing to dial 192\.0\.2\.1:6127 without TLS: .* or --insecure/);
  err = "";
  assert.equal(await runEipctl([...list, "--insecure"], io), 3, "dialled, nobody there");
  assert.match(err, /warning: plaintext to 192\.0\.2\.1:6127 \(--insecure\)/);
});
