// Renewal without a restart: the agent's certificate, key and client CA are replaced on
// disk (by a wholly new PKI from kube-eip-certs), one check of the files later new
// connections get the new ones, while a connection opened before goes on working.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { AgentClient } from "../common/agent-api.js";
import { TlsFileWatch } from "../common/tls-files.js";
import { makeCerts, type CertFiles } from "../deploy/certs.js";
import { ExecRunner } from "../kernel/runner.js";
import { Dataplane } from "./dataplane.js";
import { bindServer } from "./server.js";
import { ReloadingServerCredentials, readServerTls } from "./server-tls.js";
import { testAgentServer } from "./test-agent-server.js";

const runner = new ExecRunner();
let dir: string;
let oldPki: CertFiles;
let newPki: CertFiles;
let server: grpc.Server;
let dataplane: Dataplane;
let target: string;
let watch: TlsFileWatch;
const expiry = new Map<string, number>();
const live = { cert: "", key: "", clientCa: "" };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "keip-rotate-"));
  const nodes = [{ name: "node-1", ip: "127.0.0.1" }];
  oldPki = await makeCerts(runner, { dir: join(dir, "old"), nodes });
  newPki = await makeCerts(runner, { dir: join(dir, "new"), nodes, days: 3 });
  Object.assign(live, {
    cert: join(dir, "agent.crt"),
    key: join(dir, "agent.key"),
    clientCa: join(dir, "client-ca.crt"),
  });
  const old = oldPki.nodes.get("node-1") ?? assert.fail();
  await copyFile(old.cert, live.cert);
  await copyFile(old.key, live.key);
  await copyFile(old.clientCa, live.clientCa);
  const logger = pino({ level: "silent" });
  const allow = { clients: ["kube-eip-operator"], readers: [] };
  ({ server, dataplane } = testAgentServer(dir, allow));
  const initial = readServerTls(live);
  const creds = new ReloadingServerCredentials(initial);
  target = `127.0.0.1:${await bindServer(server, "127.0.0.1:0", creds)}`;
  watch = new TlsFileWatch(
    {
      files: { cert: live.cert, key: live.key, ca: live.clientCa },
      logger,
      onChange: (c) => creds.update(c),
      onExpiry: (file, seconds) => expiry.set(file, seconds),
    },
    initial,
  );
});

after(async () => {
  await dataplane.stop();
  server.forceShutdown();
  await rm(dir, { recursive: true, force: true });
});

const operator = (pki: CertFiles) =>
  new AgentClient(target, {
    tls: { ca: pki.agentCa.cert, cert: pki.operator.cert, key: pki.operator.key },
    serverName: "node-1",
  });

test("renewed files are picked up by the next check: new connections use them, open ones go on", async () => {
  const before = operator(oldPki);
  assert.equal((await before.listBindings(5000)).inSync, true);
  assert.equal(await watch.check(), false, "nothing changed yet");
  assert.ok((expiry.get(live.cert) ?? 0) > 3000 * 24 * 3600, "the old certificate: ten years");

  // A renewal writes the files one after the other: half-written, the last good stay.
  const fresh = newPki.nodes.get("node-1") ?? assert.fail();
  await copyFile(fresh.cert, live.cert);
  assert.equal(await watch.check(), false, "a certificate without its key is not used");
  await copyFile(fresh.key, live.key);
  await copyFile(fresh.clientCa, live.clientCa);
  assert.equal(await watch.check(), true);
  const days = (expiry.get(live.cert) ?? 0) / 86400;
  assert.ok(days > 2.9 && days <= 3, `the new certificate's expiry, in days: ${days}`);

  const renewed = operator(newPki);
  assert.equal(
    (
      await renewed.eipOperate(
        { action: "bind", eipAddr: "192.168.18.100", vmiAddr: "10.244.1.10" },
        5000,
      )
    ).result,
    "Succeed",
    "a client of the new PKI is served",
  );
  assert.equal(
    (await before.listBindings(5000)).bindings.length,
    1,
    "the connection opened before goes on",
  );
  const stale = operator(oldPki);
  await assert.rejects(stale.listBindings(3000), (err: grpc.ServiceError) => {
    assert.equal(err.code, 14, "a new connection with the old PKI is refused");
    return true;
  });
  for (const c of [before, renewed, stale]) c.close();
});

test("unreadable files keep the last good ones", async () => {
  await writeFile(live.key, "not a key");
  assert.equal(await watch.check(), false);
  const fresh = newPki.nodes.get("node-1") ?? assert.fail();
  await copyFile(fresh.key, live.key);
  const c = operator(newPki);
  assert.equal((await c.listBindings(5000)).bindings.length, 1);
  c.close();
});
