// BGP announcements end to end: real agents running gobgpd on two lab nodes, the lab's EIP
// router running BIRD 2 (another implementation) and installing what it learns into its
// kernel table, and traffic from a host behind the router. Also what keeps gobgpd the
// agent's alone: its API reachable by no other process of the node, and a PID file that
// names another process leaving that process alive.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chmod, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { GobgpClient } from "../src/bgp/gobgp-api.js";
import { identify } from "../src/bgp/own-process.js";
import { ownApiSocket } from "../src/bgp/speaker.js";
import { BindingStore } from "../src/agent/store.js";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, eipctl, startAgent } from "../src/lab/agents.js";
import { type BgpRouter, startBgpRouter } from "../src/lab/bgp-router.js";
import { NEEDS_ROOT, eventually, sleep } from "./harness.js";

const EIP_A = "192.168.18.100";
const EIP_B = "192.168.18.101";
const PORT = 8080;
/** Session establishment plus gobgpd's first connect attempt (5 to 10 s after a start). */
const SESSION_MS = 20_000;

describe("BGP: EIP routes at a BIRD router", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  let router: BgpRouter;
  const agents = new Map<number, NodeAgent>();
  let vmiA: string;
  let vmiB: string;

  const mgmt = (node: number) => lab.node(node).mgmtAddress;
  const outside = () => lab.describe().outside.namespace;
  const routerNs = () => lab.describe().router.namespace;
  const op = (node: number, action: string, eip: string, vmi: string) =>
    eipctl(lab, node, ["--action", action, "--eip-ip", eip, "--vmi-ip", vmi]);
  /**
   * Where the router's kernel routes the EIP. "Nowhere" counts only while BIRD answers and
   * shows every node's session: a dead BIRD takes its routes with it.
   */
  const routeAt = async (eip: string) => {
    const via = (await router.kernelRoutes()).get(`${eip}/32`);
    if (via === undefined) {
      const sessions = await router.sessions();
      assert.equal(sessions.size, lab.nodeCount, "BIRD answers, with a session for every node");
    }
    return via;
  };
  const routeBecomes = (eip: string, via: string | undefined, ms = 5000) =>
    eventually(async () => (await routeAt(eip)) === via, ms, 20);
  const whoami = (fromNs: string, addr: string) =>
    lab.tcpRequest(fromNs, addr, PORT, { timeoutSec: 2 }).then(
      (s) => s.trim(),
      () => undefined,
    );
  const pidFile = (node: number) => join(lab.stateDir(`agent-node${node}`), "gobgpd.pid");
  /** The PID gobgpd.pid records (a JSON record: PID, boot id, start time, exe, argv). */
  const gobgpdPid = async (node: number) =>
    (JSON.parse(await readFile(pidFile(node), "utf8")) as { pid: number }).pid;
  const apiSocket = (node: number) => ownApiSocket(lab.stateDir(`agent-node${node}`));
  const asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
  const start = async (node: number, extraArgs: readonly string[] = []) => {
    const agent = await startAgent(lab, node, {
      extraArgs: [...router.agentArgs(node), ...extraArgs],
    });
    agents.set(node, agent);
    return agent;
  };
  /** Polls the router every 20 ms; stop() resolves to how many polls missed `via`. */
  const watchRoute = (eip: string, via: string) => {
    let lost = 0;
    let watching = true;
    const polling = (async () => {
      while (watching) {
        if ((await routeAt(eip)) !== via) lost++;
        await sleep(20);
      }
    })();
    return {
      async stop() {
        watching = false;
        await polling;
        return lost;
      },
    };
  };
  const established = (node: number) =>
    eventually(async () => (await router.sessions()).get(node) === "Established", SESSION_MS);

  before(async () => {
    lab = await Lab.up({ nodes: 2, removeOnExit: true });
    router = await startBgpRouter(lab);
    vmiA = (await lab.addVmi("a", 1)).address;
    vmiB = (await lab.addVmi("b", 2)).address;
    await lab.startTcpServer(lab.vmiNamespace("a"), PORT);
    await lab.startTcpServer(lab.vmiNamespace("b"), PORT);
    await lab.startTcpServer(outside(), PORT);
    await start(1);
    await start(2);
    assert.ok(await established(1), "node 1's session comes up");
    assert.ok(await established(2), "node 2's session comes up");
  });

  after(async () => {
    for (const agent of agents.values()) await agent.stop().catch(() => {});
    await lab?.down();
  });

  test("a bind puts EIP/32 via the node's management address into the router's kernel table", async () => {
    assert.equal(await routeAt(EIP_A), undefined);
    const r = await op(1, "bind", EIP_A, vmiA);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(await routeBecomes(EIP_A, mgmt(1)), "route EIP_A via node 1");
    const get = await lab.exec(routerNs(), ["ip", "route", "get", EIP_A]);
    assert.match(get.stdout, new RegExp(`via ${mgmt(1).replace(/\./g, "\\.")} dev `));
  });

  test("a host behind the router reaches the VMI through the EIP both ways, with no ARP for the EIP", async () => {
    // Poison the router's ARP for the EIP on the public segment: traffic that needed it
    // would go to a MAC nobody has. The BGP route through the management network does not.
    const pub = lab.describe().router.publicDevice;
    await lab.exec(routerNs(), [
      "ip",
      "neigh",
      "replace",
      EIP_A,
      "lladdr",
      "02:00:00:00:00:99",
      "dev",
      pub,
      "nud",
      "permanent",
    ]);
    try {
      assert.equal(await whoami(outside(), EIP_A), lab.topology.outside);
      assert.equal(await whoami(lab.vmiNamespace("a"), lab.topology.outside), EIP_A);
    } finally {
      await lab.exec(routerNs(), ["ip", "neigh", "del", EIP_A, "dev", pub]);
    }
  });

  test("eipctl shows the peer, its state and how many EIPs it was sent", async () => {
    let last = "";
    assert.ok(
      await eventually(async () => {
        const r = await eipctl(lab, 1, ["--action", "peers", "--output", "json"]);
        last = r.stdout + r.stderr;
        const rsp = JSON.parse(r.stdout || "{}") as {
          peers?: { address: string; state: string; advertised: number }[];
          announced?: number;
        };
        const peer = rsp.peers?.[0];
        return (
          peer?.address === lab.describe().router.mgmtAddress &&
          peer.state === "ESTABLISHED" &&
          peer.advertised === 1 &&
          rsp.announced === 1
        );
      }, 5000),
      last,
    );
    const table = await eipctl(lab, 1, ["--action", "peers"]);
    assert.match(table.stdout, /PEER\s+AS\s+STATE\s+UPTIME\s+EIPS SENT/);
    assert.match(
      table.stdout,
      new RegExp(`${lab.describe().router.mgmtAddress}\\s+65000\\s+ESTABLISHED`),
    );
  });

  test("metrics export the session and the announced EIPs", async () => {
    const script = `fetch("http://${mgmt(1)}:9127/metrics").then(r => r.text()).then(t => process.stdout.write(t))`;
    const { stdout } = await lab.nodeExec(1, [process.execPath, "-e", script]);
    assert.match(stdout, /^kube_eip_agent_bgp_session_up\{peer="172\.16\.0\.1"\} 1$/m);
    assert.match(stdout, /^kube_eip_agent_bgp_announced 1$/m);
  });

  test("gobgpd's API: no TCP port in the node's namespace, its socket closed to other users", async () => {
    const pid = await gobgpdPid(1);
    const ss = async (flags: string) =>
      (await lab.nodeExec(1, ["ss", flags])).stdout
        .split("\n")
        .filter((l) => l.includes(`pid=${pid},`));
    assert.equal((await ss("-Hxlnp")).length, 1, "ss in the namespace sees gobgpd's Unix socket");
    assert.deepEqual(await ss("-Htulnp"), [], "and no TCP or UDP port of gobgpd");
    const cli = await lab.nodeExec(1, ["gobgp", "--target", `unix://${apiSocket(1)}`, "global"]);
    assert.match(cli.stdout, /AS:\s+65001/, "the agent's user reaches it");
    // As if gobgpd had run with umask 0: the directory alone keeps others out.
    await chmod(apiSocket(1), 0o777);
    const stateDir = lab.stateDir("agent-node1");
    const seen = await lab.nodeExec(1, [...asNobody, "ls", stateDir]);
    assert.match(seen.stdout, /^gobgpd$/m, "uid 65534 can see the socket's directory");
    // A client of uid 65534 in the node's namespace: it runs (exit 0) and says what
    // connecting gave.
    const connect = `require("node:net").connect(${JSON.stringify(apiSocket(1))})
      .on("connect", () => { console.log("connected"); process.exit(0); })
      .on("error", (e) => { console.log(e.code); process.exit(0); })`;
    const other = (await lab.nodeExec(1, [...asNobody, process.execPath, "-e", connect])).stdout;
    assert.equal(other.trim(), "EACCES");
  });

  test("two nodes announce only their own EIPs; unbind withdraws", async () => {
    const r = await op(2, "bind", EIP_B, vmiB);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(await routeBecomes(EIP_B, mgmt(2)));
    assert.equal(await routeAt(EIP_A), mgmt(1));
    assert.equal(await whoami(outside(), EIP_B), lab.topology.outside);
    const u = await op(2, "unbind", EIP_B, vmiB);
    assert.equal(u.code, 0, u.stderr);
    assert.ok(await routeBecomes(EIP_B, undefined), "route withdrawn");
    assert.equal(await routeAt(EIP_A), mgmt(1), "the other EIP stays");
  });

  test("moving a binding from node 1 to node 2 moves the route", async () => {
    const newAddress = await lab.moveVmi("a", 2);
    const bound = await op(2, "bind", EIP_A, newAddress);
    assert.equal(bound.code, 0, bound.stderr);
    const unbound = await op(1, "unbind", EIP_A, vmiA);
    assert.equal(unbound.code, 0, unbound.stderr);
    assert.ok(await routeBecomes(EIP_A, mgmt(2)), "route follows to node 2");
    assert.equal(await whoami(outside(), EIP_A), lab.topology.outside);
    // And back, so the later tests find EIP_A on node 1.
    vmiA = await lab.moveVmi("a", 1);
    assert.equal((await op(1, "bind", EIP_A, vmiA)).code, 0);
    assert.equal((await op(2, "unbind", EIP_A, newAddress)).code, 0);
    assert.ok(await routeBecomes(EIP_A, mgmt(1)));
  });

  test("killing gobgpd: the agent starts it again and the route stays (graceful restart)", async () => {
    const before = await gobgpdPid(1);
    const watch = watchRoute(EIP_A, mgmt(1));
    process.kill(before, "SIGKILL");
    assert.ok(
      await eventually(async () => (await gobgpdPid(1).catch(() => before)) !== before, 10_000),
      "a new gobgpd",
    );
    assert.ok(await established(1), "the session comes back");
    // Routes come back fresh (not stale) once the new speaker has sent them.
    assert.ok(
      await eventually(async () => {
        const out = await router.birdc(["show", "route", "all", `${EIP_A}/32`]);
        return out.includes(mgmt(1)) && !/stale/i.test(out);
      }, 10_000),
    );
    assert.equal(await watch.stop(), 0, "the router never lost the route");
    assert.match(agents.get(1)?.proc.output() ?? "", /gobgpd exited/);
  });

  test("restarting the agent keeps gobgpd, its session and the route", async () => {
    const pid = await gobgpdPid(1);
    const watch = watchRoute(EIP_A, mgmt(1));
    await agents.get(1)?.kill();
    await start(1);
    const lost = await watch.stop();
    assert.equal(await gobgpdPid(1), pid, "the same gobgpd");
    assert.equal(lost, 0, "the router never lost the route");
    assert.match(agents.get(1)?.proc.output() ?? "", /adopting the running gobgpd/);
    assert.equal((await router.sessions()).get(1), "Established");
  });

  test("an unbind while the agent was down is withdrawn when it comes back", async () => {
    await agents.get(1)?.kill();
    // Edit the saved state as an operator's anti-entropy would see it: no bindings at all
    // (an empty table; deleting the files would be a wiped state dir, which the agent refuses).
    await new BindingStore(lab.stateDir("agent-node1")).save([]);
    await start(1);
    assert.ok(await routeBecomes(EIP_A, undefined), "nothing bound, nothing announced");
    assert.equal((await op(1, "bind", EIP_A, vmiA)).code, 0);
    assert.ok(await routeBecomes(EIP_A, mgmt(1)));
  });

  test("--bgp-type none stops the gobgpd an earlier run left, and the route goes", async () => {
    const pid = await gobgpdPid(1);
    await agents.get(1)?.stop();
    const agent = await startAgent(lab, 1);
    agents.set(1, agent);
    assert.ok(await eventually(async () => !alive(pid), 5000), "gobgpd stopped");
    assert.ok(await routeBecomes(EIP_A, undefined, 15_000), "the route is gone at the router");
    assert.equal(await whoami(lab.vmiNamespace("a"), lab.topology.outside), EIP_A, "NAT stays");
    await agent.stop();
    await start(1);
    assert.ok(await routeBecomes(EIP_A, mgmt(1), SESSION_MS), "announced again");
  });

  test("a PID file naming another process leaves it alive: with --bgp-type none and at start", async () => {
    // Our gobgpd gone (as after a node reboot), its PID taken by a `sleep` that even bears
    // the name gobgpd.
    const record = JSON.parse(await readFile(pidFile(1), "utf8")) as { pid: number };
    await agents.get(1)?.stop();
    process.kill(record.pid, "SIGKILL");
    assert.ok(await eventually(async () => (await identify(record.pid)) === undefined, 5000));
    const link = join(lab.stateDir("impostor"), "gobgpd");
    await symlink("/bin/sleep", link);
    const impostor = await lab.spawnIn(lab.nodeNamespace(1), [link, "600"], { name: "impostor" });
    const comm = () => readFile(`/proc/${impostor.pid}/comm`, "utf8").catch(() => "");
    // `ip netns exec` has exec'd it once its name is gobgpd.
    assert.ok(await eventually(async () => (await comm()).trim() === "gobgpd", 5000));
    try {
      // An older agent's bare PID, with BGP off.
      await writeFile(pidFile(1), `${impostor.pid}\n`);
      const off = await startAgent(lab, 1);
      agents.set(1, off);
      await off.stop();
      assert.ok(impostor.running(), "--bgp-type none left it alive");
      assert.match(off.proc.output(), /PID file not trusted/);
      // Our gobgpd's record, its PID since taken by the impostor, at a start with BGP.
      await writeFile(pidFile(1), JSON.stringify({ ...record, pid: impostor.pid }));
      await start(1);
      assert.ok(await routeBecomes(EIP_A, mgmt(1), SESSION_MS), "a gobgpd of its own announces");
      assert.notEqual(await gobgpdPid(1), impostor.pid);
      assert.ok(impostor.running(), "the start left it alive");
    } finally {
      await impostor.stop();
    }
  });

  test("an unreachable peer is a visible down state; binds still apply their NAT", async () => {
    await agents.get(2)?.stop();
    const agent = await start(2, ["--bgp-peer", "172.16.0.250:65000"]);
    const r = await op(2, "bind", EIP_B, vmiB);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await whoami(lab.vmiNamespace("b"), lab.topology.outside), EIP_B);
    const peers = await eipctl(lab, 2, ["--action", "peers", "--output", "json"]);
    const rsp = JSON.parse(peers.stdout) as { peers: { address: string; state: string }[] };
    const bad = rsp.peers.find((p) => p.address === "172.16.0.250");
    assert.ok(bad && bad.state !== "ESTABLISHED", JSON.stringify(rsp));
    assert.ok(agent.proc.running());
  });

  test("password, hold time and graceful restart time reach gobgpd (read back through its API)", async () => {
    const pid = await gobgpdPid(2);
    await agents.get(2)?.stop();
    await start(2, [
      ...["--bgp-password", "md5-s3cret", "--bgp-hold-time", "33"],
      ...["--bgp-graceful-restart-time", "77", "--bgp-peer-port", "1179"],
    ]);
    assert.equal(await gobgpdPid(2), pid, "the running gobgpd, adopted");
    const client = new GobgpClient(`unix:${apiSocket(2)}`);
    try {
      const peers = await client.listPeers();
      assert.equal(peers.length, 1, JSON.stringify(peers));
      assert.equal(peers[0]?.address, lab.describe().router.mgmtAddress);
      assert.deepEqual(peers[0]?.settings, {
        port: 1179,
        password: "md5-s3cret",
        holdTimeSec: 33,
        connectRetrySec: 5,
        gracefulRestartSec: 77,
      });
    } finally {
      client.close();
    }
  });
});

describe("BGP: bad peer configuration is refused at start", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  before(async () => {
    lab = await Lab.up({ nodes: 1, removeOnExit: true });
  });
  after(async () => {
    await lab?.down();
  });

  for (const [flags, message] of [
    [["--bgp-peer", "172.16.0.300:65000"], /not ADDRESS:AS/],
    [["--bgp-peer", "172.16.0.1:0"], /AS number must be a whole number from 1/],
    [["--bgp-peer", "172.16.0.1"], /not ADDRESS:AS/],
  ] as const) {
    test(`${flags.join(" ")}: exit 2 with a clear error, nothing started`, async () => {
      const err = await startAgent(lab, 1, {
        extraArgs: [
          "--bgp-type",
          "gobgp",
          "--node-ip",
          lab.node(1).mgmtAddress,
          "--bgp-local-as",
          "65001",
          ...flags,
        ],
      }).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      assert.ok(err, "the agent must not start");
      assert.match(err.message, message);
      assert.match(err.message, /exited \(code 2/);
    });
  }
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
