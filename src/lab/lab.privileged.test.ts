// Builds real labs in network namespaces: needs root. Skipped (with the reason shown) otherwise.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { ExecRunner, type CommandRunner } from "../kernel/runner.js";
import { cleanup, Lab, removeLab, STATE_FILE } from "./lab.js";
import { listNamespaces, processAlive } from "./netns.js";
import { join } from "node:path";

const skip = process.getuid?.() === 0 ? false : "needs root: builds network namespaces";
const runner = new ExecRunner();

/** The host namespace's network state, which the lab must never change. */
async function hostSnapshot(): Promise<string> {
  const parts = await Promise.all([
    runner.run("ip", ["-o", "link"]),
    runner.run("ip", ["-o", "addr"]),
    runner.run("ip", ["route", "show", "table", "all"]),
    runner.run("ip", ["rule"]),
  ]);
  const forward = readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8");
  return parts.map((p) => p.stdout).join("\n--\n") + `\nip_forward=${forward}`;
}

function leftovers(prefix: string): string[] {
  const etc = existsSync("/etc/netns")
    ? readdirSync("/etc/netns").filter((n) => n.startsWith(`${prefix}-`))
    : [];
  return [
    ...listNamespaces().filter((n) => n === prefix || n.startsWith(`${prefix}-`)),
    ...etc.map((n) => `/etc/netns/${n}`),
  ];
}

describe("lab (2 nodes, mixed iptables backends)", { skip }, () => {
  let lab: Lab;
  let hostBefore: string;

  before(async () => {
    hostBefore = await hostSnapshot();
    const started = Date.now();
    lab = await Lab.up({ nodes: 2, iptablesModes: "mixed", removeOnExit: true });
    console.log(`# lab ${lab.prefix} up in ${Date.now() - started} ms`);
  });

  after(async () => {
    await lab?.down();
  });

  test("describe() is JSON and matches the seed addressing; lab.json is written", () => {
    const d = JSON.parse(JSON.stringify(lab.describe())) as ReturnType<Lab["describe"]>;
    assert.equal(d.prefix, lab.prefix);
    assert.equal(d.router.publicCidr, "192.168.18.1/24");
    assert.equal(d.router.mgmtCidr, "172.16.0.1/16");
    assert.equal(d.router.extCidr, "198.51.100.1/24");
    assert.equal(d.outside.address, "198.51.100.10");
    assert.deepEqual(
      d.nodes.map((n) => [n.mgmtAddress, n.bridgeAddress, n.podCidr, n.iptablesMode]),
      [
        ["172.16.0.11", "10.244.1.1", "10.244.1.0/24", "legacy"],
        ["172.16.0.12", "10.244.2.1", "10.244.2.0/24", "nft"],
      ],
    );
    assert.equal(d.pod.address, "10.244.2.50");
    assert.equal(d.pod.namespace, `${lab.prefix}-pod2`);
    assert.equal(d.serviceAddress, "192.168.223.10");
    assert.ok(existsSync(join(lab.runDir, STATE_FILE)));
    assert.ok(existsSync(join(d.nodes[0]!.etcDir, "iproute2", "rt_tables")));
  });

  test("nodes: eth1 up with the described MAC and no address; sysctls; FORWARD DROP", async () => {
    for (const n of lab.describe().nodes) {
      const { stdout } = await lab.nodeExec(n.index, ["ip", "-j", "addr", "show", "dev", "eth1"]);
      const [link] = JSON.parse(stdout) as {
        operstate: string;
        address: string;
        addr_info: unknown[];
      }[];
      assert.equal(link?.address, n.gatewayMac);
      assert.equal(link?.addr_info.length, 0);
      assert.notEqual(link?.operstate, "DOWN");
      const sysctl = await lab.nodeExec(n.index, [
        "sysctl",
        "-n",
        "net.ipv4.ip_forward",
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
      ]);
      assert.deepEqual(sysctl.stdout.trim().split("\n"), ["1", "0", "0"]);
      const rules = await lab.nodeExec(n.index, [`iptables-${n.iptablesMode}`, "-S", "FORWARD"]);
      assert.match(rules.stdout, /^-P FORWARD DROP$/m);
      // /etc/iproute2 under `ip netns exec` is the node's own copy.
      await lab.nodeExec(n.index, ["tee", "-a", "/etc/iproute2/rt_tables"], {
        input: "1001 eip_route\n",
      });
      assert.ok(
        readFileSync(join(n.etcDir, "iproute2", "rt_tables"), "utf8").includes("eip_route"),
      );
      assert.ok(!readFileSync("/etc/iproute2/rt_tables", "utf8").includes("eip_route"));
    }
  });

  test("router, management network and pod routes", async () => {
    const d = lab.describe();
    assert.ok((await lab.ping(d.outside.namespace, d.router.extAddress)).replied);
    assert.ok((await lab.ping(lab.nodeNamespace(1), d.nodes[1]!.mgmtAddress)).replied);
    assert.ok((await lab.ping(lab.nodeNamespace(1), d.router.publicAddress)).replied);
    assert.ok((await lab.ping(lab.nodeNamespace(1), d.pod.address)).replied);
    assert.ok((await lab.ping(lab.nodeNamespace(2), d.pod.address)).replied);
    // The router has no route to the pod network.
    assert.ok(!(await lab.ping(d.router.namespace, d.pod.address)).replied);
  });

  test("VMI on node1: gateway, pod on node2, service; the outside cannot reach it", async () => {
    const d = lab.describe();
    const vmi = await lab.addVmi("a", 1);
    assert.equal(vmi.address, "10.244.1.10");
    assert.equal(vmi.namespace, `${lab.prefix}-vmi-a`);
    assert.ok((await lab.ping(vmi.namespace, "10.244.1.1")).replied);
    const toPod = await lab.ping(vmi.namespace, d.pod.address, { count: 3, intervalSec: 0.05 });
    assert.deepEqual([toPod.sent, toPod.received, toPod.loss], [3, 3, 0]);

    await lab.startTcpServer(d.pod.namespace, 8080);
    assert.equal(await lab.tcpRequest(vmi.namespace, d.pod.address, 8080), vmi.address);
    assert.equal(await lab.udpRequest(vmi.namespace, d.pod.address, 8080), vmi.address);
    assert.equal(await lab.tcpRequest(vmi.namespace, d.serviceAddress, 8080), vmi.address);
    // A node reaches the service (and the remote pod) from its management address.
    assert.equal(await lab.tcpRequest(lab.nodeNamespace(1), d.serviceAddress, 8080), "172.16.0.11");

    // No EIP, no way in or out: no route from the outside, FORWARD DROP on the way out.
    await lab.startTcpServer(vmi.namespace, 8080);
    assert.ok(!(await lab.ping(d.outside.namespace, vmi.address)).replied);
    await assert.rejects(lab.tcpRequest(d.outside.namespace, vmi.address, 8080, { timeoutSec: 1 }));
    assert.ok(!(await lab.ping(vmi.namespace, d.outside.address)).replied);
  });

  test("moveVmi re-plugs into node2, keeps the namespace and its processes", async () => {
    const d = lab.describe();
    const before = lab.vmi("a");
    const server = lab.runningProcesses().find((p) => p.ns === before.namespace);
    assert.ok(server, "the server started in the VMI is tracked");
    const address = await lab.moveVmi("a", 2);
    assert.equal(address, "10.244.2.10");
    const after = lab.vmi("a");
    assert.deepEqual([after.node, after.address, after.mac], [2, address, before.mac]);
    assert.ok(server.running() && processAlive(server.pid), "process in the VMI survived");
    assert.ok((await lab.ping(after.namespace, "10.244.2.1")).replied);
    assert.equal(await lab.tcpRequest(d.pod.namespace, address, 8080), d.pod.address);
    assert.equal(await lab.tcpRequest(lab.nodeNamespace(1), address, 8080), "172.16.0.11");
    // An explicit address, and back to node 1.
    assert.equal(await lab.moveVmi("a", 1, "10.244.1.77"), "10.244.1.77");
    assert.equal(await lab.tcpRequest(d.pod.namespace, "10.244.1.77", 8080), d.pod.address);
    await assert.rejects(lab.moveVmi("a", 2, "10.244.1.5"), /not an address in node 2/);
    await assert.rejects(lab.addVmi("b", 2, d.pod.address), /not free/);
  });

  test("removeVmi stops its processes and deletes its namespace", async () => {
    const v = await lab.addVmi("c-vmi-with-a-rather-long-name", 2);
    const proc = await lab.startTcpServer(v.namespace, 9000);
    assert.ok(v.hostVeth.length <= 15);
    await lab.removeVmi(v.name);
    assert.ok(!listNamespaces().includes(v.namespace));
    assert.ok(!processAlive(proc.pid));
    assert.ok(!lab.describe().vmis.some((x) => x.name === v.name));
  });

  test("attach() reads the lab another process built", async () => {
    const other = await Lab.attach(lab.prefix);
    const mine = lab.describe();
    const theirs = other.describe();
    assert.deepEqual(theirs.vmis, mine.vmis);
    assert.deepEqual(theirs.nodes, mine.nodes);
  });

  test("down removes everything and leaves the host untouched", async () => {
    const pids = lab.describe().pids;
    assert.ok(pids.length > 0);
    const started = Date.now();
    await lab.down();
    console.log(`# lab down in ${Date.now() - started} ms`);
    assert.deepEqual(leftovers(lab.prefix), []);
    assert.ok(!existsSync(lab.runDir));
    for (const pid of pids) assert.ok(!processAlive(pid), `pid ${pid} stopped`);
    assert.equal(await hostSnapshot(), hostBefore);
  });
});

describe("lab failure handling and cleanup", { skip }, () => {
  test("a failure during up removes what was built", async () => {
    const failing: CommandRunner = {
      run(command, args, options) {
        if (args.some((a) => a.endsWith("-restore"))) {
          return Promise.reject(new Error("injected failure"));
        }
        return runner.run(command, args, options);
      },
    };
    const prefix = `keip-t${process.pid.toString(16)}f`;
    await assert.rejects(Lab.up({ nodes: 1, prefix, runner: failing }), /injected failure/);
    assert.deepEqual(leftovers(prefix), []);
    assert.ok(!existsSync(`/tmp/${prefix}`));
  });

  test("a prefix in use is refused and the lab using it is left alone", async () => {
    const lab = await Lab.up({ nodes: 1 });
    try {
      await assert.rejects(Lab.up({ nodes: 1, prefix: lab.prefix }), /in use/);
      assert.ok(listNamespaces().includes(lab.nodeNamespace(1)));
    } finally {
      await lab.down();
    }
  });

  test("onDown hooks run before the lab's processes stop, last registered first; a failing hook still lets down() finish", async () => {
    const lab = await Lab.up({ nodes: 1 });
    const proc = await lab.startTcpServer(lab.nodeNamespace(1), 7001);
    const seen: string[] = [];
    lab.onDown(() => {
      seen.push(`first, server running: ${proc.running()}`);
    });
    const unregister = lab.onDown(() => {
      seen.push("unregistered");
    });
    lab.onDown(async () => {
      await new Promise((resolve) => setTimeout(resolve, 10));
      seen.push(`second, node namespace there: ${listNamespaces().includes(lab.nodeNamespace(1))}`);
      throw new Error("hook failed");
    });
    unregister();
    await assert.rejects(lab.down(), /hook failed/);
    assert.deepEqual(seen, ["second, node namespace there: true", "first, server running: true"]);
    assert.deepEqual(leftovers(lab.prefix), []);
    assert.ok(!existsSync(lab.runDir));
    assert.ok(!processAlive(proc.pid));
    assert.throws(() => lab.onDown(() => {}), /is down/);
  });

  test("cleanup and removeLab remove labs and the processes inside them", async () => {
    const a = await Lab.up({ nodes: 1 });
    const b = await Lab.up({ nodes: 1 });
    const proc = await a.startTcpServer(a.nodeNamespace(1), 7000);
    // A process the lab does not track: cleanup finds it with `ip netns pids`.
    await b.addVmi("x", 1);
    const untracked = spawn("ip", ["netns", "exec", b.vmiNamespace("x"), "sleep", "60"], {
      detached: true,
      stdio: "ignore",
    });
    untracked.unref();
    const sleeper = untracked.pid ?? -1;
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(processAlive(sleeper));

    const report = await cleanup({ prefix: a.prefix });
    assert.ok(report.namespaces.includes(a.nodeNamespace(1)));
    assert.deepEqual(leftovers(a.prefix), []);
    assert.ok(!processAlive(proc.pid));
    assert.ok(leftovers(b.prefix).length > 0, "another lab is not touched");

    const removed = await removeLab(b.prefix);
    assert.ok(removed.namespaces.includes(b.vmiNamespace("x")));
    assert.deepEqual(leftovers(b.prefix), []);
    assert.ok(!processAlive(sleeper));
    await a.down();
    await b.down();
  });

  test("cleanup with staleOnly removes only labs left by a process that is gone and was to remove them", async () => {
    const base = `keip-stale${process.pid}`;
    // Each lab's lab.json names its owner (this process); two of them are made to look as if
    // their owner were gone (a PID that exited), one of which was kept on purpose.
    const inUse = await Lab.up({ nodes: 1, prefix: `${base}-use`, removeOnExit: true });
    const leftover = await Lab.up({ nodes: 1, prefix: `${base}-left`, removeOnExit: true });
    const kept = await Lab.up({ nodes: 1, prefix: `${base}-kept` });
    try {
      assert.equal(inUse.describe().owner?.pid, process.pid);
      assert.equal(inUse.describe().owner?.removeOnExit, true);
      assert.equal(kept.describe().owner?.removeOnExit, false);
      const gone = spawn("true");
      const deadPid = gone.pid ?? -1;
      await new Promise((resolve) => gone.on("exit", resolve));
      for (const lab of [leftover, kept]) {
        const file = join(lab.runDir, STATE_FILE);
        const state = JSON.parse(readFileSync(file, "utf8")) as { owner: { pid: number } };
        state.owner.pid = deadPid;
        writeFileSync(file, JSON.stringify(state));
      }
      const report = await cleanup({ prefix: base, staleOnly: true });
      assert.deepEqual(report.runDirs, [leftover.runDir]);
      assert.deepEqual(leftovers(leftover.prefix), [], "the leftover is gone");
      assert.ok(report.namespaces.includes(leftover.nodeNamespace(1)));
      for (const lab of [inUse, kept]) {
        assert.ok(listNamespaces().includes(lab.nodeNamespace(1)), `${lab.prefix} stays`);
        assert.ok(existsSync(join(lab.runDir, STATE_FILE)), `${lab.prefix}'s lab.json stays`);
      }
    } finally {
      for (const lab of [inUse, leftover, kept]) await lab.down().catch(() => {});
    }
  });
});
