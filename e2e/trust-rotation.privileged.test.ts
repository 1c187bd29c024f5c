// Rotation without restarts, with the real agent in a lab node on mutual TLS: the node's
// agent certificate and the administrator's client certificate are replaced on disk while
// a ping runs through an EIP and binds go on; the agent takes the new certificate (its
// expiry metric says so), no bind fails, no ping is lost.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { rename } from "node:fs/promises";
import { issueCert } from "../src/deploy/openssl.js";
import { ExecRunner } from "../src/kernel/runner.js";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, eipctl, listedBindings, startAgent } from "../src/lab/agents.js";
import { labPki } from "../src/lab/lab-tls.js";
import type { KeyPair } from "../src/deploy/certs.js";
import { NEEDS_ROOT, eventually } from "./harness.js";

const runner = new ExecRunner({ timeoutMs: 30_000 });
const LEAF = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"];

/** Reissues `pair` under `ca` as a renewal does: written aside, then moved in place. */
async function renew(ca: KeyPair, pair: KeyPair, subject: string, ext: string[]) {
  const aside = { cert: `${pair.cert}.new`, key: `${pair.key}.new` };
  await issueCert(runner, ca, aside, subject, [...LEAF, ...ext], 2);
  await rename(aside.key, pair.key);
  await rename(aside.cert, pair.cert);
}

describe("certificate rotation under load, real agent", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  let agent: NodeAgent;
  let vmi: string;
  let other: string;

  before(async () => {
    lab = await Lab.up({ nodes: 1, iptablesModes: "nft", removeOnExit: true });
    agent = await startAgent(lab, 1);
    vmi = (await lab.addVmi("a", 1)).address;
    other = (await lab.addVmi("b", 1)).address;
  });

  after(async () => {
    await agent?.stop();
    await lab?.down();
  });

  test("the agent's and the administrator's certificates renewed: no bind fails, no ping lost", async () => {
    const files = await labPki(lab);
    const node = lab.node(1);
    const pki = files.nodes.get(node.name) ?? assert.fail();
    const call = async (action: string, eip: string, to: string) => {
      const r = await eipctl(lab, 1, ["--action", action, "--eip-ip", eip, "--vmi-ip", to]);
      assert.equal(r.code, 0, `${action} ${eip}: ${r.stderr}`);
    };
    /** A bind and an unbind of a second EIP, through the agent's TLS port. */
    const cycle = async () => {
      await call("bind", "192.168.18.101", other);
      await call("unbind", "192.168.18.101", other);
    };
    await call("bind", "192.168.18.100", vmi);
    const expirySeconds = async () => {
      const m = (await lab.nodeExec(1, ["curl", "-s", `http://${node.mgmtAddress}:9127/metrics`]))
        .stdout;
      const line = m
        .split("\n")
        .find(
          (l) => l.startsWith("kube_eip_agent_tls_cert_expiry_seconds") && l.includes(pki.cert),
        );
      return Number(line?.split(" ")[1] ?? NaN);
    };
    assert.ok((await expirySeconds()) > 20 * 86400, "the lab's certificate: 30 days");
    const outside = lab.describe().outside.namespace;
    const ping = lab.ping(outside, "192.168.18.100", { count: 150, intervalSec: 0.1 });
    for (let i = 0; i < 5; i++) await cycle();
    await renew(files.agentCa, pki, `/CN=kube-eip-agent:${node.name}`, [
      "extendedKeyUsage=serverAuth",
      `subjectAltName=DNS:${node.name},IP:${node.mgmtAddress}`,
    ]);
    await renew(files.clientCa, files.admin, "/CN=kube-eip-admin", ["extendedKeyUsage=clientAuth"]);
    for (let i = 0; i < 5; i++) await cycle();
    assert.ok(
      await eventually(async () => (await expirySeconds()) < 2 * 86400 + 60, 25_000),
      "the agent serves the renewed certificate (2 days) without a restart",
    );
    await cycle();
    await call("bind", "192.168.18.101", other);
    const r = await ping;
    assert.equal(r.sent, 150);
    assert.equal(r.received, 150, "no ping lost");
    assert.deepEqual(
      (await listedBindings(lab, 1)).map((b) => [b.eipAddr, b.vmiAddr]),
      [
        ["192.168.18.100", vmi],
        ["192.168.18.101", other],
      ],
      "every acknowledged bind and unbind is what the agent holds",
    );
    assert.equal(agent.proc.running(), true, "the same agent process, never restarted");
  });
});
