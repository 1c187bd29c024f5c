// Who may drive an agent, with the real agent in a lab node on mutual TLS (certificates from
// kube-eip-certs' code, src/lab/lab-tls.ts) and eipctl as the client: only the allowed
// identities bind, unbind and list; a reader only lists; certificates of an unknown CA, an
// expired one, none at all, or an agent that is not the node's are refused, each with its
// own reason; plaintext only with --insecure on both ends.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { issueCert } from "../src/deploy/openssl.js";
import { ExecRunner } from "../src/kernel/runner.js";
import { Lab } from "../src/lab/lab.js";
import {
  AGENT_BIN,
  EIPCTL_BIN,
  type NodeAgent,
  agentArgs,
  eipctl,
  listedBindings,
  startAgent,
} from "../src/lab/agents.js";
import { labPki, labPkiPaths } from "../src/lab/lab-tls.js";
import { makeCerts } from "../src/deploy/certs.js";
import { NEEDS_ROOT } from "./harness.js";

const EIP = "192.168.18.100";
const runner = new ExecRunner({ timeoutMs: 30_000 });

describe("agent authorization on mutual TLS, real agent", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  let agent: NodeAgent;
  let vmi: string;
  let extra: string;
  const pair = (name: string) => ({
    cert: join(extra, `${name}.crt`),
    key: join(extra, `${name}.key`),
  });

  /** eipctl in node 1 against its agent's TCP port, with exactly these TLS flags. */
  async function ctl(args: readonly string[]) {
    try {
      const r = await lab.nodeExec(1, [
        process.execPath,
        EIPCTL_BIN,
        "--target",
        `${lab.node(1).mgmtAddress}:6127`,
        "--timeout",
        "5",
        ...args,
      ]);
      return { code: 0, out: r.stdout + r.stderr };
    } catch (err) {
      const e = err as { exitCode?: number; stdout?: string; stderr?: string };
      return { code: e.exitCode ?? -1, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
    }
  }

  const as = (name: string, ca?: string) => {
    const files = labPkiPaths(lab);
    const p = pair(name);
    return [
      "--tls-ca",
      ca ?? files.agentCa.cert,
      "--tls-cert",
      p.cert,
      "--tls-key",
      p.key,
      "--tls-server-name",
      lab.node(1).name,
    ];
  };
  const bind = ["--action", "bind", "--eip-ip", EIP];

  before(async () => {
    lab = await Lab.up({ nodes: 2, iptablesModes: "nft", removeOnExit: true });
    const files = await labPki(lab);
    extra = lab.stateDir("pki-extra");
    const client = [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=clientAuth",
    ];
    // Signed by the lab's client CA, for names the agent does not allow (or only to read).
    await issueCert(runner, files.clientCa, pair("mallory"), "/CN=mallory", client, 1);
    await issueCert(runner, files.clientCa, pair("monitor"), "/CN=monitor", client, 1);
    await issueCert(
      runner,
      files.clientCa,
      pair("expired-admin"),
      "/CN=kube-eip-admin",
      client,
      -1,
    );
    // The right name, from a CA the agent does not know.
    const stranger = await makeCerts(runner, { dir: lab.stateDir("pki-stranger") });
    await issueCert(
      runner,
      stranger.clientCa,
      pair("stranger-admin"),
      "/CN=kube-eip-admin",
      client,
      1,
    );
    agent = await startAgent(lab, 1, { extraArgs: ["--tls-allowed-reader", "monitor"] });
    vmi = (await lab.addVmi("a", 1)).address;
  });

  after(async () => {
    await agent?.stop();
    await lab?.down();
  });

  test("the administrator binds and lists over mutual TLS", async () => {
    const r = await eipctl(lab, 1, [...bind, "--vmi-ip", vmi]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      (await listedBindings(lab, 1)).map((b) => [b.eipAddr, b.vmiAddr]),
      [[EIP, vmi]],
    );
  });

  test("a certificate the client CA signed for another identity: bind, unbind and list refused", async () => {
    const b = await ctl([
      ...as("mallory"),
      "--action",
      "bind",
      "--eip-ip",
      "192.168.18.101",
      "--vmi-ip",
      vmi,
    ]);
    assert.equal(b.code, 1);
    assert.match(
      b.out,
      /client identity "mallory" \(certificate CN\) is not allowed to bind or unbind/,
    );
    const u = await ctl([...as("mallory"), "--action", "unbind", "--eip-ip", EIP, "--vmi-ip", vmi]);
    assert.equal(u.code, 1);
    assert.match(u.out, /client identity "mallory" .* not allowed to bind or unbind/);
    const l = await ctl([...as("mallory"), "--action", "list"]);
    assert.notEqual(l.code, 0);
    assert.match(l.out, /PERMISSION_DENIED|client identity "mallory" .* not allowed to read/);
    assert.deepEqual(
      (await listedBindings(lab, 1)).map((b) => b.eipAddr),
      [EIP],
      "nothing changed: the unbind was refused, the bind made nothing",
    );
  });

  test("a reader lists, and may not bind or unbind", async () => {
    const l = await ctl([...as("monitor"), "--action", "list", "--output", "json"]);
    assert.equal(l.code, 0, l.out);
    assert.match(l.out, new RegExp(EIP.replace(/\./g, "\\.")));
    const u = await ctl([...as("monitor"), "--action", "unbind", "--eip-ip", EIP, "--vmi-ip", vmi]);
    assert.equal(u.code, 1);
    assert.match(u.out, /client identity "monitor" .* not allowed to bind or unbind/);
    assert.equal((await listedBindings(lab, 1)).length, 1);
  });

  test("refused in the handshake: no client certificate, an expired one, one of an unknown CA", async () => {
    const files = labPkiPaths(lab);
    const none = await ctl([
      "--tls-ca",
      files.agentCa.cert,
      "--tls-server-name",
      lab.node(1).name,
      "--action",
      "list",
    ]);
    assert.equal(none.code, 3);
    assert.match(none.out, /alert certificate required/);
    const expired = await ctl([...as("expired-admin"), "--action", "list"]);
    assert.equal(expired.code, 3);
    // Node's TLS server drops a chain it cannot verify without an alert: the client sees the
    // connection reset (the reason, "certificate has expired", stays on the agent's side).
    assert.match(
      expired.out,
      /ECONNRESET|Failed to connect|disconnected before secure TLS connection/,
    );
    const stranger = await ctl([...as("stranger-admin"), "--action", "list"]);
    assert.equal(stranger.code, 3);
    assert.match(
      stranger.out,
      /ECONNRESET|Failed to connect|disconnected before secure TLS connection/,
    );
    const ok = await ctl([
      ...as("stranger-admin").slice(0, 1),
      files.agentCa.cert,
      "--tls-cert",
      files.admin.cert,
      "--tls-key",
      files.admin.key,
      "--tls-server-name",
      lab.node(1).name,
      "--action",
      "list",
    ]);
    assert.equal(ok.code, 0, `the same call with the lab's admin certificate is served: ${ok.out}`);
    // Renewed: the same identity, a fresh certificate, is served (no agent restart).
    const client = [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=clientAuth",
    ];
    await issueCert(runner, files.clientCa, pair("expired-admin"), "/CN=kube-eip-admin", client, 1);
    const renewed = await ctl([...as("expired-admin"), "--action", "list"]);
    assert.equal(renewed.code, 0, renewed.out);
  });

  test("the client refuses an agent that is not the node it meant: wrong name, wrong CA", async () => {
    const files = labPkiPaths(lab);
    const admin = ["--tls-cert", files.admin.cert, "--tls-key", files.admin.key];
    const wrongName = await ctl([
      "--tls-ca",
      files.agentCa.cert,
      ...admin,
      "--tls-server-name",
      lab.node(2).name,
      "--action",
      "list",
    ]);
    assert.equal(wrongName.code, 3);
    assert.match(
      wrongName.out,
      new RegExp(
        `Host: ${lab.node(2).name}\\. is not in the cert's altnames: DNS:${lab.node(1).name}`,
      ),
    );
    const wrongCa = await ctl([
      "--tls-ca",
      files.clientCa.cert,
      ...admin,
      "--tls-server-name",
      lab.node(1).name,
      "--action",
      "list",
    ]);
    assert.equal(wrongCa.code, 3);
    assert.match(
      wrongCa.out,
      /unable to verify the first certificate|self.signed|unable to get local issuer/,
    );
  });

  test("plaintext: refused by the agent without --insecure, by eipctl without --insecure", async () => {
    const alone = lab.stateDir("agent-plaintext");
    const apart = [
      "--state-dir",
      alone,
      "--unix-socket",
      join(alone, "agent.sock"),
      "--port",
      "6128",
      "--metrics-address",
      "",
    ];
    const noTls = agentArgs(lab, 1, { plaintext: true, extraArgs: apart }).filter(
      (a) => a !== "--insecure",
    );
    await assert.rejects(
      lab.nodeExec(1, [process.execPath, AGENT_BIN, ...noTls]),
      (err: { exitCode?: number; stderr?: string }) => {
        assert.equal(err.exitCode, 2);
        assert.match(
          err.stderr ?? "",
          /refusing to serve gRPC without TLS on 172\.16\.0\.11: .* or --insecure/,
        );
        return true;
      },
    );
    const certOnly = agentArgs(lab, 1, { extraArgs: apart }).filter(
      (a, i, all) => a !== "--tls-client-ca" && all[i - 1] !== "--tls-client-ca",
    );
    await assert.rejects(
      lab.nodeExec(1, [process.execPath, AGENT_BIN, ...certOnly]),
      (err: { exitCode?: number; stderr?: string }) => {
        assert.equal(err.exitCode, 2);
        assert.match(err.stderr ?? "", /--tls-cert without --tls-client-ca would serve any client/);
        return true;
      },
    );
    const r = await ctl(["--action", "list"]);
    assert.equal(r.code, 2);
    assert.match(r.out, /refusing to dial .* without TLS/);
  });

  test("--insecure: the agent serves plaintext, says so at start and in a metric; eipctl warns", async () => {
    await agent.stop();
    const plain = await startAgent(lab, 1, { plaintext: true, name: "agent-node1-plain" });
    try {
      assert.match(
        plain.proc.output(),
        /"msg":"--insecure: gRPC without TLS; anyone who reaches this address can bind, unbind and list"/,
      );
      const metrics = await lab.nodeExec(1, [
        "curl",
        "-s",
        `http://${lab.node(1).mgmtAddress}:9127/metrics`,
      ]);
      assert.match(metrics.stdout, /^kube_eip_agent_grpc_insecure 1$/m);
      const r = await eipctl(lab, 1, ["--action", "list"], { plaintext: true });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /warning: plaintext to 172\.16\.0\.11:6127 \(--insecure\)/);
      const tls = await eipctl(lab, 1, ["--action", "list"]);
      assert.equal(tls.code, 3, "a TLS client gets no answer from a plaintext agent");
    } finally {
      await plain.stop();
      agent = await startAgent(lab, 1, { extraArgs: ["--tls-allowed-reader", "monitor"] });
    }
    const metrics = await lab.nodeExec(1, [
      "curl",
      "-s",
      `http://${lab.node(1).mgmtAddress}:9127/metrics`,
    ]);
    assert.match(metrics.stdout, /^kube_eip_agent_grpc_insecure 0$/m);
  });
});
