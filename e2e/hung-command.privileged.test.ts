// A command that never returns: the agent's `ip` is a wrapper that sleeps while a marker
// file exists, then runs the real ip. The agent must go on answering gRPC, say on /readyz
// that it is not ready and why, stay alive on /healthz, and recover by itself (ready, the
// kernel in sync) once the command works again. A real agent in a lab node; every command
// it runs is limited to half a second here (--command-timeout).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { access, chmod, constants, rm, writeFile } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, eipctl, startAgent } from "../src/lab/agents.js";
import { NEEDS_ROOT, eventually, whoami } from "./harness.js";

const EIP = "192.168.18.120";
const EIP_2 = "192.168.18.121";
const VMI_PORT = 8080;

/** The real `ip`: the first one on this process's PATH. */
async function realIp(): Promise<string> {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    const path = join(dir, "ip");
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // Not here.
    }
  }
  throw new Error("no ip on PATH");
}

describe("an agent whose ip never returns", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  let agent: NodeAgent;
  let vmiA: string;
  let vmiB: string;
  let marker: string;

  /** What /readyz or /healthz answers: "<status> <body>". */
  const probe = async (path: string) => {
    const url = `http://${lab.node(1).mgmtAddress}:9127${path}`;
    const script = `fetch(${JSON.stringify(url)}).then(async (r) => process.stdout.write(r.status + " " + (await r.text())))`;
    return (await lab.nodeExec(1, [process.execPath, "-e", script])).stdout.trim();
  };
  const op = (action: string, eip: string, vmi: string) =>
    eipctl(lab, 1, ["--timeout", "20", "--action", action, "--eip-ip", eip, "--vmi-ip", vmi]);
  const bind = (eip: string, vmi: string) => op("bind", eip, vmi);
  const fromOutside = () => whoami(lab, lab.describe().outside.namespace, EIP_2, VMI_PORT);

  before(async () => {
    lab = await Lab.up({ nodes: 1, removeOnExit: true });
    vmiA = (await lab.addVmi("a", 1)).address;
    vmiB = (await lab.addVmi("b", 1)).address;
    await lab.startTcpServer(lab.vmiNamespace("b"), VMI_PORT);
    const bin = lab.stateDir("hung-ip-bin");
    marker = join(bin, "hang");
    const wrapper = join(bin, "ip");
    // A test fixture, not the agent: the agent still runs "ip" with an argument array.
    await writeFile(
      wrapper,
      `#!/bin/sh\nwhile [ -e '${marker}' ]; do sleep 0.1; done\nexec '${await realIp()}' "$@"\n`,
    );
    await chmod(wrapper, 0o755);
    agent = await startAgent(lab, 1, {
      env: { PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` },
      extraArgs: ["--command-timeout", "0.5"],
    });
  });

  after(async () => {
    await agent?.stop();
    await lab?.down();
  });

  test("ready and alive while its commands work", async () => {
    assert.equal((await bind(EIP, vmiA)).code, 0);
    assert.equal(await probe("/readyz"), "200 ok");
    assert.equal(await probe("/healthz"), "200 ok");
  });

  test("with ip hung: an unbind is answered Failed, gRPC answers, /readyz says why, /healthz stays up", async () => {
    await writeFile(marker, "");
    // An unbind goes straight to the apply (a bind first reads the node's addresses with
    // ip, and is refused before any change when that read hangs).
    const r = await op("unbind", EIP, vmiA);
    assert.equal(r.code, 1, `answered Failed, not left to time out: ${r.stderr}`);
    const listed = await agent.client.listBindings();
    assert.equal(listed.inSync, false);
    const ready = await probe("/readyz");
    assert.match(
      ready,
      /^503 retrying after \d+ failed apply\(s\): phase \d: .*timed out after 500 ms, killed/,
    );
    assert.equal(await probe("/healthz"), "200 ok");
    assert.match(agent.proc.output(), /"msg":"apply failed; will retry"/);
  });

  test("once ip works again it recovers by itself: ready, the kernel in sync", async () => {
    await rm(marker);
    assert.ok(
      await eventually(async () => (await probe("/readyz")) === "200 ok", 20_000, 200),
      "ready again",
    );
    assert.equal((await agent.client.listBindings()).inSync, true);
    assert.equal((await bind(EIP_2, vmiB)).code, 0);
    assert.equal(await fromOutside(), lab.topology.outside);
  });
});
