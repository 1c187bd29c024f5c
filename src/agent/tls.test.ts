// TLS on the agent's gRPC port: with a client CA set, only clients holding a certificate
// that CA signed get an answer. Certificates are made by the real openssl for each run.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { AgentClient } from "../common/agent-api.js";
import { parseIpv4Net, type Ipv4Net } from "../common/ipv4.js";
import { runEipctl } from "../cli/eipctl.js";
import { BindingTable } from "./binding-table.js";
import { Dataplane } from "./dataplane.js";
import { AgentMetrics } from "./metrics.js";
import { TEST_PLAN_CONFIG } from "../model/test-plan-config.js";
import { AgentService, bindServer, buildGrpcServer, serverCredentials } from "./server.js";
import { BindingStore } from "./store.js";

const run = promisify(execFile);
const net = (s: string): Ipv4Net => parseIpv4Net(s) ?? assert.fail(s);

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
  await issue("other-ca", "intruder", "DNS:intruder");
  const logger = pino({ level: "silent" });
  const metrics = new AgentMetrics();
  const table = new BindingTable();
  dataplane = new Dataplane({
    table,
    store: new BindingStore(join(dir, "state")),
    config: TEST_PLAN_CONFIG,
    subsystems: [],
    logger,
    metrics,
  });
  const service = new AgentService({
    table,
    dataplane,
    policy: {
      eipCidr: net("192.168.18.0/24"),
      internalNets: [net("10.244.0.0/16")],
      gatewayIp: "192.168.18.1",
    },
    logger,
    metrics,
  });
  ({ server } = buildGrpcServer(service));
  const creds = serverCredentials({
    cert: join(dir, "agent.crt"),
    key: join(dir, "agent.key"),
    clientCa: join(dir, "ca.crt"),
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

test("clients without a certificate, with one from another CA, or in plaintext are refused", async () => {
  const attempts = [
    new AgentClient(target, { tls: { ca: file("ca.crt") } }),
    new AgentClient(target, {
      tls: { ca: file("ca.crt"), cert: file("intruder.crt"), key: file("intruder.key") },
    }),
    new AgentClient(target),
  ];
  for (const client of attempts) {
    await assert.rejects(client.listBindings(3000));
    client.close();
  }
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
