// The operator's agent pool against a real agent gRPC server on mutual TLS with certificates
// from kube-eip-certs: it accepts the agent of the node it meant to dial and refuses one that
// presents another node's certificate, saying which identity it got.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import type { Dataplane } from "../agent/dataplane.js";
import { testAgentServer } from "../agent/test-agent-server.js";
import { bindServer, serverCredentials } from "../agent/server.js";
import { makeCerts, type CertFiles } from "../deploy/certs.js";
import { ExecRunner } from "../kernel/runner.js";
import { AgentPool } from "./agents.js";

let dir: string;
let files: CertFiles;
let server: grpc.Server;
let dataplane: Dataplane;
let port: number;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "keip-pool-"));
  files = await makeCerts(new ExecRunner(), {
    dir,
    nodes: [{ name: "node-1" }, { name: "node-2" }],
  });
  const allow = { clients: ["kube-eip-operator"], readers: [] };
  ({ server, dataplane } = testAgentServer(dir, allow));
  // This agent is node-2's.
  const pki = files.nodes.get("node-2") ?? assert.fail();
  port = await bindServer(
    server,
    "127.0.0.1:0",
    serverCredentials({ cert: pki.cert, key: pki.key, clientCa: pki.clientCa, allow }),
  );
});

after(async () => {
  await dataplane.stop();
  server.forceShutdown();
  await rm(dir, { recursive: true, force: true });
});

function pool(nodeAt127: string[]): AgentPool {
  const p = new AgentPool({
    port,
    timeoutMs: 3000,
    tls: { ca: files.agentCa.cert, cert: files.operator.cert, key: files.operator.key },
  });
  p.setNodes((address) => (address === "127.0.0.1" ? nodeAt127 : []));
  return p;
}

test("the agent of the node the operator meant to dial is served", async () => {
  const p = pool(["node-2"]);
  assert.deepEqual(await p.bind("127.0.0.1", "192.168.18.100", "10.244.1.10"), { ok: true });
  assert.deepEqual(
    (await p.list("127.0.0.1")).map((b) => [b.eip, b.vmi, b.state.programmed.reason]),
    // This agent has no read-back: what an older agent answers.
    [["192.168.18.100", "10.244.1.10", "NotReported"]],
  );
  p.close();
});

test("an agent presenting another node's certificate is refused, naming the identity", async () => {
  const p = pool(["node-1"]);
  const r = await p.unbind("127.0.0.1", "192.168.18.100", "10.244.1.10");
  assert.equal(r.ok, false);
  assert.ok(!r.ok && r.unreachable);
  assert.match(
    r.ok ? "" : r.reason,
    /agent identity mismatch: 127\.0\.0\.1 presented a certificate for "kube-eip-agent:node-2", not kube-eip-agent:node-1/,
  );
  await assert.rejects(p.list("127.0.0.1"), /identity mismatch/);
  p.close();
  const right = pool(["node-2"]);
  assert.equal((await right.list("127.0.0.1")).length, 1, "the refused unbind never arrived");
  right.close();
});

test("an address no node or two nodes claim has no agent to verify", async () => {
  for (const [nodes, reason] of [
    [[], /no node has InternalIP 127\.0\.0\.1/],
    [["node-1", "node-2"], /nodes node-1, node-2 share InternalIP 127\.0\.0\.1/],
  ] as const) {
    const p = pool([...nodes]);
    const r = await p.bind("127.0.0.1", "192.168.18.101", "10.244.1.11");
    assert.match(r.ok ? "" : r.reason, reason);
    p.close();
  }
});

test("renewed TLS files: new calls read them after renewTls, not before", async () => {
  const live = join(dir, "live-ca.crt");
  await copyFile(files.agentCa.cert, live);
  const p = new AgentPool({
    port,
    timeoutMs: 3000,
    tls: { ca: live, cert: files.operator.cert, key: files.operator.key },
  });
  p.setNodes(() => ["node-2"]);
  assert.equal((await p.list("127.0.0.1")).length, 1);
  // A CA that did not sign the agent: proves which files a channel was made with.
  await copyFile(files.clientCa.cert, live);
  assert.equal((await p.list("127.0.0.1")).length, 1, "the open channel goes on");
  p.renewTls();
  await assert.rejects(p.list("127.0.0.1"), /No connection established|certificate/);
  p.close();
});
