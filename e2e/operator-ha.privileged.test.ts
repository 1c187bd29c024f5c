// The operator's remaining end-to-end proofs, with a real kube-apiserver, real agents and
// the operator in its own processes, checked the way a user would (the Lease, Events,
// EipBinding status, metrics, what each agent holds, traffic from the host behind the
// router): two replicas under leader election; a cluster that ran the seed's operator and
// agent, taken over without losing a packet; a node rebuilt from scratch, repaired by
// anti-entropy alone; and the traffic gap of live migrations. Timings are reported as
// diagnostics, not asserted tightly.
//
// The agents run without BGP (the default mode: the EIP is an address of the gateway
// device, found by ARP on the public segment). That is the world the seed's sites ran in
// (its BGP manager was a stub), and the only one in which "no packet lost while adopting"
// is a fair claim: with BGP the route to the EIP would appear only when our agent starts.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { Lab, type LabProcess } from "../src/lab/lab.js";
import { type NodeAgent, listedBindings, seedNodeHolding, startAgent } from "../src/lab/agents.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { type LabOperator, startOperator } from "../src/lab/operator.js";
import { NFT_TABLE } from "../src/model/desired.js";
import { FINALIZER, SEED_FINALIZER } from "../src/operator/types.js";
import { NEEDS_ROOT, eventually, sleep } from "./harness.js";

const PORT = 8080;
const LEADER_ELECT = ["--leader-elect", "--leader-election-namespace", "kube-eip-system"];
const LEADING = '"msg":"leading"';
const STANDING_BY = '"msg":"standing by; another replica leads"';

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

interface EipBindingObject {
  metadata: { finalizers?: string[] };
  status?: { nodeName?: string; vmiAddress?: string; conditions?: Condition[] };
}

/** What a user looks at in a lab cluster: kubectl, the agents' lists, traffic from outside. */
class Site {
  constructor(
    readonly lab: Lab,
    readonly cluster: LabCluster,
  ) {}

  get outside(): string {
    return this.lab.describe().outside.namespace;
  }

  kubectl(...args: string[]): Promise<string> {
    return this.cluster.kubectl(args);
  }

  async apply(name: string, eip: string, vmi: string): Promise<void> {
    await this.cluster.applyEipBinding(name, eip, vmi);
  }

  /** The EipBinding as the apiserver holds it; undefined once it is gone. */
  async binding(name: string): Promise<EipBindingObject | undefined> {
    try {
      return JSON.parse(
        await this.kubectl("get", "eipbinding", name, "-o", "json"),
      ) as EipBindingObject;
    } catch (err) {
      if (/NotFound/.test(String((err as { stderr?: string }).stderr ?? err))) return undefined;
      throw err;
    }
  }

  /** Eventually Ready (reason Bound) with its status naming `node`. */
  boundOn(name: string, node: string, ms = 10_000): Promise<boolean> {
    return eventually(
      async () => {
        const b = await this.binding(name);
        const ready = b?.status?.conditions?.find((c) => c.type === "Ready");
        return b?.status?.nodeName === node && ready?.reason === "Bound";
      },
      ms,
      20,
    );
  }

  /** The EIPs node `node`'s agent holds, as eipctl lists them. */
  async held(node: number): Promise<string[]> {
    return (await listedBindings(this.lab, node)).map((b) => b.eipAddr);
  }

  async holds(node: number, eip: string): Promise<boolean> {
    return (await this.held(node)).includes(eip);
  }

  /** Who the VMI behind the EIP sees connecting from the outside host (undefined: nobody). */
  whoami(eip: string): Promise<string | undefined> {
    return this.lab.tcpRequest(this.outside, eip, PORT, { timeoutSec: 2 }).then(
      (s) => s.trim(),
      () => undefined,
    );
  }

  reaches(eip: string, ms = 10_000): Promise<boolean> {
    return eventually(async () => (await this.whoami(eip)) === this.lab.topology.outside, ms, 50);
  }
}

/**
 * `ping -i 0.01` from the outside host (iputils keeps to about one every 17 ms here), each
 * reply timestamped (-D), for counting lost replies and timing when traffic came back.
 * Sequence numbers start at 1.
 */
class SteadyPing {
  private constructor(private readonly proc: LabProcess) {}

  static async start(site: Site, eip: string, name: string): Promise<SteadyPing> {
    const proc = await site.lab.spawnIn(
      site.outside,
      ["ping", "-n", "-D", "-i", "0.01", "-W", "1", eip],
      { name, waitFor: `PING ${eip}` },
    );
    return new SteadyPing(proc);
  }

  /** icmp_seq -> when its reply arrived (ms since the epoch). */
  replies(): Map<number, number> {
    const replies = new Map<number, number>();
    for (const m of this.proc
      .output()
      .matchAll(/^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)/gm)) {
      replies.set(Number(m[2]), Number(m[1]) * 1000);
    }
    return replies;
  }

  /** When the first reply after `epochMs` arrived, if one did. */
  firstReplyAfter(epochMs: number): number | undefined {
    let first: number | undefined;
    for (const at of this.replies().values())
      if (at > epochMs && (first ?? Infinity) > at) first = at;
    return first;
  }

  /** SIGINT; resolves to the replies. */
  async stop(): Promise<Map<number, number>> {
    this.proc.child.kill("SIGINT");
    await this.proc.exited;
    return this.replies();
  }
}

/** The requests that got no reply, up to the last one that did (later ones were in flight). */
function unanswered(replies: ReadonlyMap<number, number>): number[] {
  const last = Math.max(0, ...replies.keys());
  return Array.from({ length: last }, (_, k) => k + 1).filter((seq) => !replies.has(seq));
}

/** The outage around a moment: the last reply before it, the first after, the requests lost. */
function gapAround(replies: ReadonlyMap<number, number>, epochMs: number) {
  let before = { seq: 0, at: -Infinity };
  let after = { seq: Infinity, at: Infinity };
  for (const [seq, at] of replies) {
    if (at < epochMs && at > before.at) before = { seq, at };
    if (at > epochMs && at < after.at) after = { seq, at };
  }
  return { lost: after.seq - before.seq - 1, silentMs: after.at - before.at, firstAt: after.at };
}

/** The epoch time of a performance.now() reading, to compare with ping's timestamps. */
const epoch = (perfNow: number) => performance.timeOrigin + perfNow;

describe("two eip-operator replicas with leader election", { skip: NEEDS_ROOT }, () => {
  const EIP = "192.168.18.100";
  let lab: Lab;
  let site: Site;
  const agents: NodeAgent[] = [];
  const operators: LabOperator[] = [];
  let leader: LabOperator;
  let standby: LabOperator;

  /** The replica's identity, as its elector logs it. */
  const identity = (op: LabOperator): string => {
    for (const line of op.proc.output().split("\n")) {
      if (!line.includes('"identity"')) continue;
      const entry = JSON.parse(line) as { identity?: string };
      if (entry.identity) return entry.identity;
    }
    throw new Error(`${op.proc.name} logged no identity`);
  };
  const holder = async () => {
    const lease = JSON.parse(
      await site.kubectl("get", "lease", "-n", "kube-eip-system", "kube-eip-leader", "-o", "json"),
    ) as { spec?: { holderIdentity?: string } };
    return lease.spec?.holderIdentity;
  };
  const metrics = async (op: LabOperator) =>
    (
      await lab.exec(site.cluster.routerNamespace, [
        process.execPath,
        "-e",
        `fetch("http://127.0.0.1:${op.metricsPort}/metrics").then(async r => process.stdout.write(await r.text()))`,
      ])
    ).stdout;
  const replica = async (name: string, waitFor: string | RegExp) => {
    const op = await startOperator(site.cluster, { extraArgs: LEADER_ELECT, name, waitFor });
    operators.push(op);
    return op;
  };

  before(async () => {
    lab = await Lab.up({ nodes: 2, removeOnExit: true });
    site = new Site(lab, await startLabCluster(lab));
    await site.cluster.createNamespace("kube-eip-system");
    for (const node of [1, 2]) agents.push(await startAgent(lab, node));
    await site.cluster.createVmi("a", 1);
    await lab.startTcpServer(lab.vmiNamespace("a"), PORT);
  });

  after(async () => {
    for (const op of operators) await op.stop().catch(() => {});
    for (const a of agents) await a.stop().catch(() => {});
    await lab?.down();
  });

  test("two replicas started together: exactly one leads, and only it handles a new binding", async () => {
    const elected = new RegExp(`${LEADING}|${STANDING_BY}`);
    const both = await Promise.all([
      replica("operator-a", elected),
      replica("operator-b", elected),
    ]);
    const leaders = both.filter((op) => op.proc.output().includes(LEADING));
    assert.equal(leaders.length, 1, "exactly one replica logs that it leads");
    leader = leaders[0] as LabOperator;
    standby = both.find((op) => op !== leader) as LabOperator;
    assert.ok(standby.proc.output().includes(STANDING_BY));
    assert.equal(await holder(), identity(leader), "the Lease names the leader");
    await leader.proc.waitFor('"msg":"caches synced; reconciling"', 30_000);
    assert.match(await metrics(leader), /^kube_eip_operator_leader 1$/m);
    assert.match(await metrics(standby), /^kube_eip_operator_leader 0$/m);

    await site.apply("a", EIP, "a");
    await site.kubectl("wait", "--for=condition=Ready", "eipbinding/a", "--timeout=10s");
    assert.ok(await site.reaches(EIP));
    const events = (
      JSON.parse(
        await site.kubectl("get", "events.events.k8s.io", "-n", "default", "-o", "json"),
      ) as {
        items: {
          reason: string;
          reportingInstance: string;
          regarding: { kind: string; name: string };
        }[];
      }
    ).items.filter((e) => e.regarding.kind === "EipBinding" && e.regarding.name === "a");
    assert.ok(events.some((e) => e.reason === "Bound"));
    assert.deepEqual(
      [...new Set(events.map((e) => e.reportingInstance))],
      [identity(leader)],
      "every Event about the binding comes from the leader",
    );
    assert.match(
      await metrics(leader),
      /^kube_eip_operator_reconcile_total\{result="success"\} [1-9]/m,
    );
    assert.doesNotMatch(await metrics(standby), /^kube_eip_operator_reconcile_total\{/m);
    assert.doesNotMatch(standby.proc.output(), /caches synced/, "the standby never started acting");
  });

  test("SIGKILL the leader: the standby takes over once the Lease expires and carries out a later change", async (t) => {
    const killed = performance.now();
    await leader.kill();
    await site.cluster.moveVmi("a", 2);
    await standby.proc.waitFor(LEADING, 40_000);
    const tookOver = performance.now();
    assert.ok(await site.boundOn("a", "node2", 20_000), "the move made after the kill is done");
    const done = performance.now();
    assert.equal(await holder(), identity(standby));
    assert.equal(await site.holds(1, EIP), false, "node 1 holds nothing");
    assert.equal(await site.holds(2, EIP), true);
    assert.ok(await site.reaches(EIP));
    assert.ok(tookOver - killed > 10_000, "a Lease that was alive 2 s ago is not taken early");
    t.diagnostic(
      `standby led ${(tookOver - killed).toFixed(0)} ms after the SIGKILL (Lease 15 s); the move was done ${(done - killed).toFixed(0)} ms after it`,
    );
    leader = standby;
  });

  test("SIGTERM the leader: it releases the Lease and a standby takes over within seconds", async (t) => {
    standby = await replica("operator-c", STANDING_BY);
    const stopped = performance.now();
    await leader.stop();
    assert.equal((await leader.proc.exited).code, 0, "a graceful stop");
    assert.match(leader.proc.output(), /"msg":"released the lease"/);
    await standby.proc.waitFor(LEADING, 15_000);
    const tookOver = performance.now();
    await site.cluster.moveVmi("a", 1);
    assert.ok(await site.boundOn("a", "node1", 20_000), "the move made after the stop is done");
    const done = performance.now();
    assert.equal(await holder(), identity(standby));
    assert.equal(await site.holds(2, EIP), false, "node 2 holds nothing");
    assert.ok(await site.reaches(EIP));
    assert.ok(tookOver - stopped < 10_000, "well before the 15 s Lease would have expired");
    t.diagnostic(
      `standby led ${(tookOver - stopped).toFixed(0)} ms after the SIGTERM; the next move was done ${(done - tookOver).toFixed(0)} ms after that`,
    );
    leader = standby;
  });

  test("a leader whose Lease another holder takes over stops and exits (code 1) once it cannot renew", async (t) => {
    assert.equal(await holder(), identity(leader), "the Lease names the leader");
    assert.ok(leader.proc.running());
    // Another holder writes the Lease, as a replica that (wrongly or not) believes it leads.
    const now = new Date().toISOString().replace(/Z$/, "000Z");
    const taken = performance.now();
    await site.kubectl(
      "patch",
      "lease",
      "-n",
      "kube-eip-system",
      "kube-eip-leader",
      "--type",
      "merge",
      "-p",
      JSON.stringify({
        spec: { holderIdentity: "intruder", acquireTime: now, renewTime: now },
      }),
    );
    const exit = await Promise.race([leader.proc.exited, sleep(30_000).then(() => undefined)]);
    const exitedMs = performance.now() - taken;
    assert.ok(exit, "the leader exited");
    assert.equal(exit.code, 1, "exit code 1: its Deployment restarts it as a standby");
    const log = leader.proc.output();
    assert.match(log, /"msg":"lost the lease: renewing failed until the deadline"/);
    assert.match(log, /"msg":"lost the lease: stopping"/);
    assert.equal(await holder(), "intruder", "it did not take the Lease back");
    assert.ok(exitedMs > 5_000, "not before renewing had failed for a while (renew deadline 10 s)");
    t.diagnostic(`the leader exited ${exitedMs.toFixed(0)} ms after its Lease was taken over`);
  });
});

describe(
  "one eip-operator: adopting the seed's cluster, a rebuilt node, live migrations",
  { skip: NEEDS_ROOT },
  () => {
    const EIP_A = "192.168.18.100";
    const EIP_B = "192.168.18.101";
    let lab: Lab;
    let site: Site;
    let seedDir: string;
    let operator: LabOperator | undefined;
    const agents = new Map<number, NodeAgent>();

    before(async () => {
      lab = await Lab.up({ nodes: 2, iptablesModes: "nft", removeOnExit: true });
      site = new Site(lab, await startLabCluster(lab));
      const vmi = await site.cluster.createVmi("a", 1);
      await lab.startTcpServer(lab.vmiNamespace("a"), PORT);
      agents.set(2, await startAgent(lab, 2));
      // Node 1 as the seed's agent left it: its kernel state and metadata files.
      seedDir = await seedNodeHolding(lab, 1, EIP_A, vmi.address);
      // The EipBinding as the seed's operator wrote it: its finalizer, its progress in
      // spec, no status.
      await site.cluster.kubectl(
        ["create", "-f", "-"],
        JSON.stringify({
          apiVersion: "extension.lucheng0127/v1",
          kind: "EipBinding",
          metadata: { name: "a", namespace: "default", finalizers: [SEED_FINALIZER] },
          spec: {
            eipAddr: EIP_A,
            vmiName: "a",
            currentHyper: "node1",
            currentIPAddr: vmi.address,
            lastHyper: "",
            lastIPAddr: "",
            phase: "Ready",
          },
        }),
      );
    });

    after(async () => {
      await operator?.stop().catch(() => {});
      for (const a of agents.values()) await a.stop().catch(() => {});
      await lab?.down();
    });

    test("our agent and operator take over the seed's binding without losing a packet", async (t) => {
      assert.equal(
        await site.whoami(EIP_A),
        lab.topology.outside,
        "the seed's state carries traffic",
      );
      const ping = await SteadyPing.start(site, EIP_A, "ping-adoption");
      await sleep(500);
      const t0 = performance.now();
      agents.set(1, await startAgent(lab, 1, { seedStateDir: seedDir }));
      operator = await startOperator(site.cluster);
      assert.ok(await site.boundOn("a", "node1"), "Ready, Bound on node1");
      const readyMs = performance.now() - t0;
      // A second more of pings after the take-over; the count only shows the ping ran.
      await sleep(1000);
      const replies = await ping.stop();
      assert.ok(replies.size > 50, `a steady ping ran (${replies.size} replies)`);
      assert.deepEqual(unanswered(replies), [], "no request went unanswered");
      const b = await site.binding("a");
      assert.deepEqual(
        [...(b?.metadata.finalizers ?? [])].sort(),
        [FINALIZER, SEED_FINALIZER].sort(),
      );
      assert.equal(b?.status?.vmiAddress, site.cluster.vmi("a").address);
      t.diagnostic(
        `${replies.size} pings, none lost; agent and operator started and the binding Ready in ${readyMs.toFixed(0)} ms`,
      );
    });

    test("deleting the adopted EipBinding unbinds it and removes both finalizers", async () => {
      await site.kubectl("delete", "eipbinding", "a", "--timeout=20s");
      assert.equal(await site.binding("a"), undefined, "gone: no finalizer held it");
      assert.equal(await site.holds(1, EIP_A), false);
      assert.equal((await lab.ping(site.outside, EIP_A, { count: 3 })).received, 0);
    });

    test("a node rebuilt from scratch gets its EIPs back by anti-entropy, nobody acting", async (t) => {
      await site.cluster.createVmi("b", 1);
      await lab.startTcpServer(lab.vmiNamespace("b"), PORT);
      await site.apply("a", EIP_A, "a");
      await site.apply("b", EIP_B, "b");
      assert.ok(await site.boundOn("a", "node1"));
      assert.ok(await site.boundOn("b", "node1"));
      assert.ok(await site.reaches(EIP_A));
      assert.ok(await site.reaches(EIP_B));

      const log = () => operator?.proc.output() ?? "";
      const repaired = (text: string) =>
        text
          .split("\n")
          .filter((l) => l.includes('"msg":"anti-entropy: agents lack bindings; reconciling"'))
          .flatMap((l) => (JSON.parse(l) as { keys: string[] }).keys);
      assert.deepEqual(repaired(log()), [], "bindings being made are not reported as drift");
      const logFrom = log().length;

      await agents.get(1)?.kill();
      await rm(lab.stateDir("agent-node1"), { recursive: true, force: true });
      await rm(seedDir, { recursive: true, force: true });
      await wipeKernelState(lab, 1);
      assert.equal(await site.whoami(EIP_A), undefined, "the rebuilt node carries nothing");

      const agent = await startAgent(lab, 1, { name: "agent-node1-rebuilt" });
      agents.set(1, agent);
      const started = performance.now();
      assert.match(
        agent.proc.output(),
        /"bindings":0,"msg":"kernel state restored"/,
        "started empty",
      );
      assert.ok(await site.reaches(EIP_A, 20_000), "EIP a reaches its VMI again");
      assert.ok(await site.reaches(EIP_B, 20_000), "EIP b reaches its VMI again");
      const back = performance.now();
      assert.deepEqual((await site.held(1)).sort(), [EIP_A, EIP_B]);
      assert.deepEqual(
        [...new Set(repaired(log().slice(logFrom)))].sort(),
        ["default/a", "default/b"],
        "anti-entropy found what the node lost",
      );
      t.diagnostic(
        `both EIPs carried traffic again ${(back - started).toFixed(0)} ms after the empty agent started (anti-entropy every 3 s)`,
      );
    });

    test("five live migrations under a steady ping: traffic resumes after each, the old node holds nothing", async (t) => {
      // The lab gives the VMI back the address it had on a node (see the next test for why
      // that matters to a flow that comes back). Moves start 3.5 s apart, as live migrations
      // do (each takes longer): a node announces an EIP that arrives by gratuitous ARP three
      // times, a second apart (--garp-count 3), and a VMI that leaves again within those 3 s
      // races the new node's first announcement with the old node's next one; when the old
      // one wins, the router sends the EIP's traffic to the old node until the new node's
      // second announcement, a second later (seen with moves 1 s apart).
      const ping = await SteadyPing.start(site, EIP_A, "ping-migrations");
      await sleep(500);
      const moves: { to: number; start: number; written: number }[] = [];
      for (const to of [2, 1, 2, 1, 2]) {
        const previous = moves.at(-1);
        if (previous) await sleep(previous.start + 3500 - epoch(performance.now()));
        const from = site.cluster.vmi("a").node;
        const start = epoch(performance.now());
        const written = epoch(await site.cluster.moveVmi("a", to));
        assert.ok(await site.boundOn("a", `node${to}`), `bound on node${to}`);
        assert.equal(await site.holds(from, EIP_A), false, `node${from} holds nothing`);
        assert.ok(
          await eventually(async () => ping.firstReplyAfter(written) !== undefined, 15_000, 20),
          `traffic resumed after the move to node${to}`,
        );
        moves.push({ to, start, written });
      }
      await sleep(1500);
      const replies = await ping.stop();
      const gaps = moves.map((m) => gapAround(replies, m.written));
      moves.forEach((m, i) => {
        const g = gaps[i] as ReturnType<typeof gapAround>;
        t.diagnostic(
          `move ${i + 1} to node${m.to}: ${g.lost} pings lost, no reply for ${g.silentMs.toFixed(0)} ms; re-plugging the VMI and writing its status took ${(m.written - m.start).toFixed(0)} ms, the first reply came ${(g.firstAt - m.written).toFixed(0)} ms after the status write`,
        );
      });
      const seqs = [...replies.keys()];
      const times = [...replies.values()];
      const everyMs =
        (Math.max(...times) - Math.min(...times)) / (Math.max(...seqs) - Math.min(...seqs));
      const lostInGaps = gaps.reduce((n, g) => n + g.lost, 0);
      t.diagnostic(`${replies.size} replies, a ping every ${everyMs.toFixed(1)} ms on average`);
      assert.equal(unanswered(replies).length, lostInGaps, "no ping lost outside the moves' gaps");
    });

    test("a VMI back on a node under another address: a flow that passed there before resumes", async () => {
      const ping = await SteadyPing.start(site, EIP_A, "ping-new-address");
      try {
        for (const [to, newAddress] of [
          [1, "10.244.1.30"],
          [2, undefined],
          [1, "10.244.1.31"],
        ] as const) {
          const written = epoch(
            await site.cluster.moveVmi("a", to, newAddress ? { newAddress } : {}),
          );
          assert.ok(await site.boundOn("a", `node${to}`), `bound on node${to}`);
          assert.ok(
            await eventually(async () => ping.firstReplyAfter(written) !== undefined, 5_000, 20),
            `traffic resumed after the move to node${to} (${site.cluster.vmi("a").address})`,
          );
        }
      } finally {
        await ping.stop();
      }
    });
  },
);

/**
 * Removes every piece of kernel state of ours from a node, as on a freshly installed one:
 * our chains and the rules that jump to them or match our sets (or accept what our nftables
 * table marked), the ipsets, our nftables table, the policy rules, the eip_route table and
 * the EIP addresses on the gateway device.
 */
async function wipeKernelState(lab: Lab, node: number): Promise<void> {
  const run = (argv: string[], input?: string) =>
    lab.nodeExec(node, argv, input === undefined ? {} : { input });
  const mode = lab.node(node).iptablesMode;
  const ours = /KUBE-EIP-|kube-eip[-:]|k8s_internal_net/;
  const restore: string[] = [];
  let table = "";
  let deletes: string[] = [];
  let chains: string[] = [];
  for (const line of (await run([`iptables-${mode}-save`])).stdout.split("\n")) {
    if (line.startsWith("*")) [table, deletes, chains] = [line, [], []];
    const chain = /^:(\S+)/.exec(line)?.[1];
    if (chain && ours.test(chain)) chains.push(chain);
    const rule = /^-A (\S+) (.*)$/.exec(line);
    if (rule && !ours.test(rule[1] ?? "") && ours.test(line))
      deletes.push(`-D ${rule[1]} ${rule[2]}`);
    if (line === "COMMIT" && deletes.length + chains.length > 0) {
      restore.push(
        table,
        ...deletes,
        ...chains.map((c) => `-F ${c}`),
        ...chains.map((c) => `-X ${c}`),
        "COMMIT",
      );
    }
  }
  if (restore.length > 0)
    await run([`iptables-${mode}-restore`, "--noflush"], `${restore.join("\n")}\n`);
  for (const set of (await run(["ipset", "list", "-n"])).stdout.split("\n")) {
    if (ours.test(set)) await run(["ipset", "destroy", set]);
  }
  const tables = async () => (await run(["nft", "list", "tables"])).stdout;
  if ((await tables()).includes(`table ip ${NFT_TABLE}\n`)) {
    await run(["nft", "delete", "table", "ip", NFT_TABLE]);
  }
  const rules = JSON.parse((await run(["ip", "-json", "rule", "show"])).stdout) as {
    priority: number;
    src?: string;
  }[];
  for (const r of rules) {
    if (r.priority === 1001 && r.src)
      await run(["ip", "rule", "del", "from", r.src, "priority", "1001"]);
  }
  await run(["ip", "route", "flush", "table", "1001"]);
  await run(["ip", "addr", "flush", "dev", lab.node(node).gatewayDevice]);
  const left =
    (await run([`iptables-${mode}-save`])).stdout + (await run(["ipset", "list", "-n"])).stdout;
  assert.doesNotMatch(left, ours, "nothing of ours is left in the kernel");
  assert.doesNotMatch(await tables(), new RegExp(` ${NFT_TABLE}$`, "m"), "nor our nftables table");
}
