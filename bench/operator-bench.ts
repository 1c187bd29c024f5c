// The operator benchmark: N EipBindings and their VMIs created at once across two lab nodes,
// with the eip-operator, real agents and the BGP router; the time until all are Ready and
// carry traffic, the reconcile time, the operator's memory; then VMI moves under a steady
// probe. It prints figures next to a BASELINE from the same run and never asserts on them.
//
//   node dist/bench/operator-bench.js [--quick] [--bindings N] [--moves M] [--workers W]
//                                     [--json FILE]
//
// Needs root and the Kubernetes binaries of scripts/setup.sh. It builds its own lab (torn
// down at the end, on failure and on Ctrl-C): 2 nodes, BIRD on the router, the lab's cluster
// (a real kube-apiserver in the router namespace), an eip_agent on each node announcing by
// BGP (`--bgp-listen-port 179`, `--resync-interval 10`, the agent's default), the operator
// with its defaults (8 workers unless --workers, anti-entropy every 30 s, agent timeout
// 10 s, log level info).
//
// Addresses. 2,000 EIPs do not fit the seed's public /24, so the lab runs with a public
// network of 100.64.0.0/16 (router 100.64.0.1): the agents' --eip-cidr and --gateway-ip and
// BIRD's import filter follow the lab's topology, and a VMI's outbound traffic leaves through
// a gateway that is really on the segment, so traffic works both ways as in the seed's
// addressing. EIP i is 100.64.(1 + i / 250).(1 + i % 250). VMI i runs on node 1 + i % 2; its
// address comes from the pod network's spare /24s (10.244.3.1 up: cluster.createVmis with
// addressPool "spare"), since two nodes' /24s hold 506 addresses, except for a sample of 10
// VMIs (spread over the list, 5 per node) that are real lab VMIs on their node's cni0 with a
// who-are-you server, and carry the traffic checks.
//
// Operator, bulk: the sample's VMIs are created (plugged, Running) first, untimed; then from
// t0, at once, the other N - 10 VMI objects (a create and a status write each: Running,
// nodeName, interfaces[0].ipAddress) and all N EipBindings are written over the REST API
// (32 requests in flight, VMIs and EipBindings concurrently, as a bulk apply would). A watch
// in the router namespace (bench/ready-watch.ts: the operator's informer) reports each
// binding's first Ready=True, stamped on arrival here; all Ready is when the last one came,
// checked by one list at the end.
// Each sample VMI is probed from t0 on (one ping through its EIP from the outside host every
// ~100 ms; once it answers, a TCP who-are-you through the EIP from the outside, which must
// see the outside host's address, and from the VMI to the outside, which must see the EIP):
// traffic-ready is when the last sample passed both. Then: each agent's `eipctl --action
// list` against the expected split; the reconcile time quantiles from the operator's
// /metrics histogram kube_eip_operator_reconcile_duration_seconds (interpolated within its
// buckets, as Prometheus' histogram_quantile does: the operator logs no per-reconcile
// timings), taken once the operator is idle (queue empty, nothing reconciled for 2 s: Ready
// is not the end of its work); the operator's RSS peak (VmHWM of its node process) and its
// RSS 10 s after it went idle; the CPU time until then of the operator, the apiserver,
// etcd, the agents (with the commands they ran, not their gobgpd) and the whole machine
// (shared: others' work included).
//
// Operator, moves: M moves of sample VMIs (round robin, each to the other node) while
// `ping -D -i 0.01` runs from the outside host to its EIP: per move, the time from the
// status write (cluster.moveVmi's return) to the first reply through the new node (ping's
// own receive timestamps), the whole outage (last reply before, first after: it includes
// the lab's re-plug, done before the status write), and the replies lost. After each move
// the EipBinding must say the new node and TCP must pass both ways. A moved VMI takes an
// address its new node never handed out before (.100 up): the lab's re-plug sends nothing
// from the VMI, so a reused address keeps the previous VMI's MAC in the node's neighbour
// table, and traffic stops for 5 to 15 s more (seen in a first run).
//
// Baseline (the seed's operator cannot run here): the operator is stopped and both agents
// emptied (untimed); then the controller-less script a person would write beside `kubectl
// get -w`: one `eipctl --action bind` process per binding, one after the other, for the same
// N bindings (each VMI's current node and address; handed over for free, no watch latency),
// until a time cap (60 s; quick 10 s): its rate and the time N would take. And M moves of the
// sample with the seed's order, unbind on the old node and bind on the new one at the same
// time (two eipctl processes started together right after the status write), under the
// same probe.
import { writeFileSync } from "node:fs";
import os from "node:os";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { type NodeAgent, eipctl, startAgent } from "../src/lab/agents.js";
import { type BgpRouter, startBgpRouter } from "../src/lab/bgp-router.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { mapLimit } from "../src/lab/kube-rest.js";
import { Lab, type LabProcess, defaultPrefix } from "../src/lab/lab.js";
import { type LabOperator, startOperator } from "../src/lab/operator.js";
import {
  AGENT_APPLY,
  CpuMeter,
  type Histogram,
  RECONCILE,
  type Scrape,
  counters,
  histogramDelta,
  histogramFigures,
  parseScrape,
} from "./metrics-scrape.js";
import {
  type LatencyStats,
  machine,
  mb,
  nodePid,
  now,
  readStatusKb,
  round,
  sleep,
  stats,
} from "./common.js";

const PORT = 8080;
const NAMESPACE = "bench";
const TOPOLOGY = { publicNet: "100.64.0.0/16", routerPublic: "100.64.0.1" };
const SAMPLE = 10;
const READY_WATCH = fileURLToPath(new URL("./ready-watch.js", import.meta.url));
const EIPBINDINGS = `/apis/extension.lucheng0127/v1/namespaces/${NAMESPACE}/eipbindings`;

interface Settings {
  readonly bindings: number;
  readonly moves: number;
  /** The operator's --workers; undefined: its default (8). */
  readonly workers: number | undefined;
  readonly baselineCapMs: number;
  readonly jsonFile: string | undefined;
  readonly quick: boolean;
}

function parseSettings(argv: readonly string[]): Settings {
  let bindings: number | undefined;
  let moves: number | undefined;
  let workers: number | undefined;
  let jsonFile: string | undefined;
  const quick = argv.includes("--quick");
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const int = (min: number, max: number) => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < min || v > max) throw new Error(`${arg}: ${min} to ${max}`);
      return v;
    };
    if (arg === "--bindings") bindings = int(2 * SAMPLE, 20000);
    else if (arg === "--moves") moves = int(0, 100);
    else if (arg === "--workers") workers = int(1, 256);
    else if (arg === "--json") jsonFile = argv[++i];
    else if (arg !== "--quick") {
      throw new Error(
        "usage: node dist/bench/operator-bench.js [--quick] [--bindings N] [--moves M] [--workers W] [--json FILE]",
      );
    }
  }
  return {
    bindings: bindings ?? (quick ? 200 : 2000),
    moves: moves ?? (quick ? 5 : 20),
    workers,
    baselineCapMs: quick ? 10_000 : 60_000,
    jsonFile,
    quick,
  };
}

const eip = (i: number) => `100.64.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;
const vmiName = (i: number) => `vm-${i}`;
const nodeOf = (i: number) => 1 + (i % 2);
/** Sample indices: spread over the list, alternating nodes. */
const sampleIndices = (n: number) =>
  Array.from({ length: SAMPLE }, (_, k) => Math.floor((k * n) / SAMPLE) + (k % 2));

function loadavg(): string {
  return os
    .loadavg()
    .map((x) => round(x, 2))
    .join(" ");
}

// ---- watching and probing ----

/** Each EipBinding's first Ready=True, stamped on arrival, from bench/ready-watch.ts. */
class ReadyWatch {
  readonly firstReady = new Map<string, number>();
  /** Watches the helper re-opened, as it said when stopped. */
  restarts = NaN;
  private buffered = "";

  private constructor(readonly proc: LabProcess) {
    proc.child.stdout?.on("data", (chunk: Buffer) => {
      const t = now();
      this.buffered += chunk.toString("utf8");
      const lines = this.buffered.split("\n");
      this.buffered = lines.pop() ?? "";
      for (const line of lines) {
        const [word, value] = line.trim().split(" ");
        if (word === "READY" && value && !this.firstReady.has(value)) this.firstReady.set(value, t);
        if (word === "RESTARTS") this.restarts = Number(value);
      }
    });
  }

  /** Resolves once the helper listed the (still empty) namespace and watches it. */
  static async start(lab: Lab, cluster: LabCluster): Promise<ReadyWatch> {
    const proc = await lab.spawnIn(
      cluster.routerNamespace,
      [process.execPath, READY_WATCH, cluster.kubeconfig, NAMESPACE],
      { name: "ready-watch", waitFor: /^SYNCED$/m, timeoutMs: 30_000 },
    );
    return new ReadyWatch(proc);
  }

  async waitAll(n: number, timeoutMs: number): Promise<void> {
    const end = now() + timeoutMs;
    while (this.firstReady.size < n && now() < end && this.proc.running()) await sleep(50);
    if (!this.proc.running()) throw new Error(`ready-watch exited: ${this.proc.output()}`);
  }

  async stop(): Promise<void> {
    await this.proc.stop();
  }
}

/** `ping -D -i 0.01` from a lab namespace: each reply with ping's receive time (epoch ms). */
class PingProbe {
  readonly replies: { seq: number; at: number }[] = [];
  private buffered = "";
  private summary: { sent: number; received: number } | undefined;

  private constructor(readonly proc: LabProcess) {
    proc.child.stdout?.on("data", (chunk: Buffer) => {
      this.buffered += chunk.toString("utf8");
      const lines = this.buffered.split("\n");
      this.buffered = lines.pop() ?? "";
      for (const line of lines) {
        const r = /^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+)/.exec(line);
        if (r) this.replies.push({ seq: Number(r[2]), at: Number(r[1]) * 1000 });
        const s = /(\d+) packets transmitted, (\d+) received/.exec(line);
        if (s) this.summary = { sent: Number(s[1]), received: Number(s[2]) };
      }
    });
  }

  static async start(lab: Lab, ns: string, address: string): Promise<PingProbe> {
    const proc = await lab.spawnIn(ns, ["ping", "-n", "-D", "-i", "0.01", address], {
      name: "move-probe",
    });
    return new PingProbe(proc);
  }

  async waitUntil(pred: () => boolean, timeoutMs: number): Promise<boolean> {
    const end = now() + timeoutMs;
    while (!pred() && now() < end) await sleep(10);
    return pred();
  }

  /** SIGINT (ping prints its summary); how many were sent and received. */
  async stop(): Promise<{ sent: number; received: number }> {
    this.proc.child.kill("SIGINT");
    await this.proc.exited;
    const lastSeq = Math.max(0, ...this.replies.map((r) => r.seq));
    return this.summary ?? { sent: lastSeq, received: this.replies.length };
  }
}

// ---- the bench ----

interface Sample {
  readonly index: number;
  readonly name: string;
  readonly eip: string;
}

interface MoveFigure {
  readonly vmi: string;
  readonly from: number;
  readonly to: number;
  /** Status write -> first reply through the new node. */
  readonly afterWriteMs: number;
  /** Last reply before -> first reply after (re-plug included). */
  readonly outageMs: number;
  readonly lost: number;
  readonly sent: number;
  readonly verified: boolean;
}

interface MovesSummary {
  readonly moves: readonly MoveFigure[];
  readonly afterWrite: LatencyStats;
  readonly outage: LatencyStats;
  readonly lost: LatencyStats;
  readonly lossRate: number;
}

function summarize(moves: readonly MoveFigure[]): MovesSummary {
  const sent = moves.reduce((a, m) => a + m.sent, 0);
  return {
    moves,
    afterWrite: stats(moves.map((m) => m.afterWriteMs)),
    outage: stats(moves.map((m) => m.outageMs)),
    lost: stats(moves.map((m) => m.lost)),
    lossRate: sent === 0 ? NaN : round(moves.reduce((a, m) => a + m.lost, 0) / sent, 4),
  };
}

class Bench {
  readonly outsideNs: string;
  readonly outsideAddress: string;
  /** Next host part of a moved VMI's address, per node: never one used before (see move). */
  private readonly moveHost = new Map([
    [1, 100],
    [2, 100],
  ]);

  constructor(
    readonly lab: Lab,
    readonly cluster: LabCluster,
  ) {
    this.outsideNs = lab.describe().outside.namespace;
    this.outsideAddress = lab.topology.outside;
  }

  whoami(fromNs: string, address: string): Promise<string | undefined> {
    return this.lab.tcpRequest(fromNs, address, PORT, { timeoutSec: 2 }).then(
      (s) => s.trim(),
      () => undefined,
    );
  }

  /** TCP through the EIP both ways: the outside seen by the VMI, the EIP seen outside. */
  async bothWays(s: Sample): Promise<boolean> {
    const vmiNs = this.cluster.vmi(s.name).netns ?? "";
    return (
      (await this.whoami(this.outsideNs, s.eip)) === this.outsideAddress &&
      (await this.whoami(vmiNs, this.outsideAddress)) === s.eip
    );
  }

  /** Polls one sample from t0 until it passes both ways: ms after t0, or NaN. */
  async trafficReady(s: Sample, t0: number, timeoutMs: number): Promise<number> {
    while (now() - t0 < timeoutMs) {
      const ping = await this.lab.ping(this.outsideNs, s.eip, { timeoutSec: 0.2 });
      if (ping.replied && (await this.bothWays(s))) return now() - t0;
      await sleep(100);
    }
    return NaN;
  }

  async held(node: number): Promise<number> {
    const r = await eipctl(this.lab, node, ["--action", "list", "--output", "json"]);
    if (r.code !== 0) throw new Error(`eipctl list on node ${node}: ${r.stderr}`);
    return ((JSON.parse(r.stdout) as { bindings?: unknown[] }).bindings ?? []).length;
  }

  async scrape(ns: string, address: string, histogram: string): Promise<Scrape> {
    const { stdout } = await this.lab.exec(ns, [
      "curl",
      "-sS",
      "--max-time",
      "10",
      `http://${address}/metrics`,
    ]);
    return parseScrape(stdout, histogram);
  }

  scrapeOperator(op: LabOperator): Promise<Scrape> {
    return this.scrape(this.cluster.routerNamespace, `127.0.0.1:${op.metricsPort}`, RECONCILE);
  }

  /** Both agents' apply histograms, summed. */
  async scrapeAgents(): Promise<Histogram> {
    const [a, b] = await Promise.all(
      [1, 2].map(async (node) => {
        const n = this.lab.node(node);
        return (await this.scrape(n.namespace, `${n.mgmtAddress}:9127`, AGENT_APPLY)).histogram;
      }),
    );
    if (!a || !b) throw new Error("no agent metrics");
    return {
      buckets: a.buckets.map(([le, c], k) => [le, c + (b.buckets[k]?.[1] ?? 0)] as const),
      count: a.count + b.count,
      sum: a.sum + b.sum,
    };
  }

  async bindingNode(name: string): Promise<string | undefined> {
    const b = await this.cluster.api.get<{
      status?: { nodeName?: string; conditions?: { type: string; status: string }[] };
    }>(`${EIPBINDINGS}/${name}`);
    const ready = b.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";
    return ready ? b.status?.nodeName : undefined;
  }

  /**
   * One move of a sample VMI to the other node under the probe; `act` runs right after the
   * status write (the baseline's eipctl calls; nothing for the operator: it watches), while
   * ping stamps its replies itself; `settled` says when the control side is done.
   */
  async move(
    s: Sample,
    act: (from: { node: number; address: string }, to: number) => Promise<void>,
    settled: (to: number) => Promise<boolean>,
  ): Promise<MoveFigure> {
    const before = this.cluster.vmi(s.name);
    const to = before.node === 1 ? 2 : 1;
    const probe = await PingProbe.start(this.lab, this.outsideNs, s.eip);
    try {
      if (!(await probe.waitUntil(() => probe.replies.length >= 10, 10_000))) {
        throw new Error(`${s.eip} does not answer before moving ${s.name}`);
      }
      // A fresh address: the lab re-plugs without the VMI sending anything, so an address
      // another VMI had on that node keeps its MAC in the node's neighbour table for seconds.
      const host = this.moveHost.get(to) ?? 100;
      this.moveHost.set(to, host + 1);
      const newAddress = this.lab.addressing.podAddress(to, host);
      const at = performance.timeOrigin + (await this.cluster.moveVmi(s.name, to, { newAddress }));
      await act({ node: before.node, address: before.address }, to);
      const after = () => probe.replies.find((r) => r.at > at);
      await probe.waitUntil(() => after() !== undefined, 15_000);
      const first = after();
      const last = [...probe.replies].reverse().find((r) => r.at < (first?.at ?? Infinity));
      const settledOk = await eventually(() => settled(to), 15_000);
      await sleep(200);
      const { sent, received } = await probe.stop();
      return {
        vmi: s.name,
        from: before.node,
        to,
        afterWriteMs: first ? round(first.at - at) : NaN,
        outageMs: first && last ? round(first.at - last.at) : NaN,
        lost: sent - received,
        sent,
        verified: settledOk && first !== undefined && (await this.bothWays(s)),
      };
    } finally {
      if (probe.proc.running()) await probe.stop();
    }
  }
}

async function eventually(fn: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = now() + timeoutMs;
  for (;;) {
    if (await fn()) return true;
    if (now() > end) return false;
    await sleep(100);
  }
}

function printMoves(title: string, m: MovesSummary): void {
  process.stdout.write(`${title}\n`);
  for (const f of m.moves) {
    process.stdout.write(
      `  ${f.vmi.padEnd(8)} node${f.from} -> node${f.to}: first reply ${f.afterWriteMs} ms after the status write, outage ${f.outageMs} ms, ${f.lost}/${f.sent} lost${f.verified ? "" : " (NOT verified)"}\n`,
    );
  }
}

async function main(): Promise<number> {
  const s = parseSettings(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stderr.write("operator-bench needs root: it builds network namespaces\n");
    return 2;
  }
  const m = machine({ gobgpd: ["gobgpd", ["--version"]], bird: ["bird", ["--version"]] });
  process.stdout.write(
    `kube-eip operator benchmark${s.quick ? " (--quick: a smoke run)" : ""}\n` +
      Object.entries(m)
        .map(([k, v]) => `  ${k.padEnd(9)} ${v}`)
        .join("\n") +
      `\n  ${s.bindings} EipBindings and VMIs on 2 nodes (${SAMPLE} of them real lab VMIs); ${s.moves} moves; operator workers ${s.workers ?? "8 (default)"}\n\n`,
  );
  const loads: Record<string, string> = { start: loadavg() };
  const lab = await Lab.up({
    nodes: 2,
    prefix: defaultPrefix().replace(/^keip-/, "keip-obench-"),
    removeOnExit: true,
    topology: TOPOLOGY,
  });
  try {
    const router: BgpRouter = await startBgpRouter(lab);
    const cluster = await startLabCluster(lab);
    await lab.startTcpServer(lab.describe().outside.namespace, PORT);
    const agents = new Map<number, NodeAgent>();
    for (const node of [1, 2]) {
      agents.set(
        node,
        await startAgent(lab, node, {
          resyncSeconds: 10,
          extraArgs: [...router.agentArgs(node), "--bgp-listen-port", "179", "--log-level", "info"],
        }),
      );
    }
    const sessionsUp = async () =>
      [...(await router.sessions()).values()].filter((st) => st === "Established").length === 2;
    if (!(await eventually(sessionsUp, 30_000))) throw new Error("BGP sessions did not come up");
    const bench = new Bench(lab, cluster);

    // The sample: real lab VMIs with a who-are-you server, created before t0.
    const samples: Sample[] = sampleIndices(s.bindings).map((i) => ({
      index: i,
      name: vmiName(i),
      eip: eip(i),
    }));
    await cluster.createVmis(
      samples.map((x) => ({ name: x.name, node: nodeOf(x.index) })),
      { namespace: NAMESPACE },
    );
    for (const x of samples) {
      await lab.startTcpServer(cluster.vmi(x.name).netns ?? "", PORT);
    }
    const sampled = new Set(samples.map((x) => x.index));
    const rest = Array.from({ length: s.bindings }, (_, i) => i).filter((i) => !sampled.has(i));

    const operator = await startOperator(cluster, {
      extraArgs: [
        "--anti-entropy-interval",
        "30s",
        "--agent-timeout",
        "10s",
        "--log-level",
        "info",
        ...(s.workers === undefined ? [] : ["--workers", String(s.workers)]),
      ],
    });
    const opPid = nodePid(operator.proc);
    const rssStartMB = mb(readStatusKb(opPid, "VmRSS"));
    const watch = await ReadyWatch.start(lab, cluster);
    const scrape0 = await bench.scrapeOperator(operator);
    const agents0 = await bench.scrapeAgents();
    const cp = cluster.controlPlane.pids();
    const cpu = new CpuMeter(
      new Map([
        ["operator", opPid],
        ["apiserver", cp.apiServer ?? NaN],
        ["etcd", cp.etcd ?? NaN],
        ...[...agents].map(([node, a]) => [`agent${node}`, nodePid(a.proc)] as [string, number]),
      ]),
    );
    loads["bulk start"] = loadavg();

    // ---- operator: N at once ----
    process.stdout.write(`creating ${s.bindings} EipBindings and ${rest.length} VMIs at once\n`);
    const readyTimeoutMs = Math.max(120_000, s.bindings * 100);
    const t0 = now();
    const traffic = Promise.all(samples.map((x) => bench.trafficReady(x, t0, readyTimeoutMs)));
    const [vmisWrittenMs, bindingsWrittenMs] = await Promise.all([
      cluster
        .createVmis(
          rest.map((i) => ({ name: vmiName(i), node: nodeOf(i) })),
          { namespace: NAMESPACE, plug: false, addressPool: "spare" },
        )
        .then(() => now() - t0),
      mapLimit(
        Array.from({ length: s.bindings }, (_, i) => i),
        32,
        (i) =>
          cluster.api.post(EIPBINDINGS, {
            apiVersion: "extension.lucheng0127/v1",
            kind: "EipBinding",
            metadata: { name: vmiName(i), namespace: NAMESPACE },
            spec: { eipAddr: eip(i), vmiName: vmiName(i) },
          }),
      ).then(() => now() - t0),
    ]);
    await watch.waitAll(s.bindings, readyTimeoutMs);
    const readySeen = watch.firstReady.size;
    const allReadyMs = readySeen === s.bindings ? Math.max(...watch.firstReady.values()) - t0 : NaN;
    const firstReadyMs = Math.min(...watch.firstReady.values()) - t0;
    const trafficMs = await traffic;
    const trafficReadyMs = Math.max(...trafficMs);
    await watch.stop();
    // Ready is not the end of the work: wait until the queue is empty and nothing was
    // reconciled for 2 s; the last change is when the operator went idle.
    let scrape1 = await bench.scrapeOperator(operator);
    let lastChange = now();
    for (;;) {
      await sleep(250);
      const next = await bench.scrapeOperator(operator);
      if (next.histogram.count !== scrape1.histogram.count) lastChange = now();
      scrape1 = next;
      const depth = next.values.get("kube_eip_operator_queue_depth") ?? NaN;
      if (depth === 0 && now() - lastChange >= 2000) break;
    }
    const idleMs = lastChange - t0;
    const cpuUsed = cpu.used();
    const cpuWindow = cpu.elapsed();
    const cpuBulk = cpuUsed["operator"] ?? NaN;
    const peakAtIdleMB = mb(readStatusKb(opPid, "VmHWM"));
    loads["bulk end"] = loadavg();
    const bulkReconcile = histogramFigures(histogramDelta(scrape1.histogram, scrape0.histogram));
    const bulkApply = histogramFigures(histogramDelta(await bench.scrapeAgents(), agents0));
    const list = await cluster.api.get<{
      items: { status?: { conditions?: { type: string; status: string; reason: string }[] } }[];
    }>(EIPBINDINGS);
    const reasons = new Map<string, number>();
    for (const item of list.items) {
      const c = item.status?.conditions?.find((x) => x.type === "Ready");
      const key = `${c?.status ?? "none"}/${c?.reason ?? "none"}`;
      reasons.set(key, (reasons.get(key) ?? 0) + 1);
    }
    const expected = (node: number) =>
      cluster.listVmis().filter((v) => v.namespace === NAMESPACE && v.node === node).length;
    const split = {
      node1: { held: await bench.held(1), expected: expected(1) },
      node2: { held: await bench.held(2), expected: expected(2) },
    };
    await sleep(10_000);
    const rssSettledMB = mb(readStatusKb(opPid, "VmRSS"));
    const bulk = {
      vmisWrittenMs: round(vmisWrittenMs),
      bindingsWrittenMs: round(bindingsWrittenMs),
      firstReadyMs: round(firstReadyMs),
      allReadyMs: round(allReadyMs),
      readySeen,
      listed: Object.fromEntries(reasons),
      trafficReadyMs: round(trafficReadyMs),
      idleMs: round(idleMs),
      watchRestarts: watch.restarts,
      trafficMs: trafficMs.map((x) => round(x)),
      reconcile: bulkReconcile,
      agentApply: bulkApply,
      reconciles: counters(scrape1, "kube_eip_operator_reconcile_total", scrape0),
      antiEntropy: counters(scrape1, "kube_eip_operator_anti_entropy_repairs_total", scrape0),
      agentCalls: counters(scrape1, "kube_eip_operator_agent_calls_total", scrape0),
      cpuSeconds: cpuUsed,
      cpuWindowSeconds: cpuWindow,
      rssStartMB,
      rssPeakAtIdleMB: peakAtIdleMB,
      rssSettledMB,
      split,
    };
    process.stdout.write(
      `  VMIs written ${bulk.vmisWrittenMs} ms, EipBindings written ${bulk.bindingsWrittenMs} ms after t0\n` +
        `  first Ready ${bulk.firstReadyMs} ms, all ${readySeen}/${s.bindings} Ready ${bulk.allReadyMs} ms after t0; listed: ${JSON.stringify(bulk.listed)}; watch restarts ${watch.restarts}\n` +
        `  sample traffic both ways: all ${SAMPLE} after ${bulk.trafficReadyMs} ms (each: ${bulk.trafficMs.join(", ")})\n` +
        `  operator idle (queue empty, nothing reconciled for 2 s) ${bulk.idleMs} ms after t0\n` +
        `  reconcile (histogram, bulk): n ${bulkReconcile.count}, p50 ${bulkReconcile.p50Ms} ms, p99 ${bulkReconcile.p99Ms} ms, mean ${bulkReconcile.meanMs} ms; ${bulk.reconciles}; anti-entropy ${bulk.antiEntropy}\n` +
        `  agent calls: ${bulk.agentCalls}; agents' apply (histogram): n ${bulkApply.count}, p50 ${bulkApply.p50Ms} ms, p99 ${bulkApply.p99Ms} ms\n` +
        `  CPU seconds until idle: ${Object.entries(cpuUsed)
          .map(([k, v]) => `${k} ${v}`)
          .join(
            ", ",
          )} (machine: every process, over ${cpuWindow} s of ${os.availableParallelism()} CPUs)\n` +
        `  operator: RSS ${rssStartMB} MB at start, peak ${peakAtIdleMB} MB, ${rssSettledMB} MB 10 s after idle\n` +
        `  agents hold: node1 ${split.node1.held} (expected ${split.node1.expected}), node2 ${split.node2.held} (expected ${split.node2.expected})\n\n`,
    );

    // ---- operator: moves ----
    const opMoves: MoveFigure[] = [];
    for (let k = 0; k < s.moves; k++) {
      const x = samples[k % SAMPLE] as Sample;
      opMoves.push(
        await bench.move(
          x,
          async () => {},
          async (to) => (await bench.bindingNode(x.name)) === cluster.nodeName(to),
        ),
      );
    }
    const operatorMoves = summarize(opMoves);
    printMoves("operator moves:", operatorMoves);
    const scrape2 = await bench.scrapeOperator(operator);
    const moveReconcile = histogramFigures(histogramDelta(scrape2.histogram, scrape1.histogram));
    const movesCounters = ["reconcile_total", "anti_entropy_repairs_total", "agent_calls_total"]
      .map((c) => `${c} ${counters(scrape2, `kube_eip_operator_${c}`, scrape1)}`)
      .join("; ");
    process.stdout.write(
      `  reconcile (histogram, since the bulk): n ${moveReconcile.count}, p50 ${moveReconcile.p50Ms} ms, p99 ${moveReconcile.p99Ms} ms; ${movesCounters}\n`,
    );
    const rssPeakMB = mb(readStatusKb(opPid, "VmHWM"));
    const rssEndMB = mb(readStatusKb(opPid, "VmRSS"));
    loads["moves end"] = loadavg();
    await operator.stop();

    // ---- baseline: the operator gone, the agents emptied (untimed) ----
    for (const a of agents.values()) {
      const held = (await a.client.listBindings()).bindings;
      await mapLimit(held, 32, async (b) => {
        const r = await a.client.eipOperate({
          action: "unbind",
          eipAddr: b.eipAddr,
          vmiAddr: b.vmiAddr,
        });
        if (r.result !== "Succeed") throw new Error(`emptying node ${a.node}: ${r.reason}`);
      });
    }
    const bindArgs = (i: number) => {
      const v = cluster.vmi(vmiName(i));
      return {
        node: v.node,
        args: ["--action", "bind", "--eip-ip", eip(i), "--vmi-ip", v.address],
      };
    };
    process.stdout.write(
      `\nBASELINE: one eipctl process per binding, sequential, capped at ${s.baselineCapMs / 1000} s\n`,
    );
    const b0 = now();
    const baselineLatency: number[] = [];
    let baselineBound = 0;
    for (let i = 0; i < s.bindings && now() - b0 < s.baselineCapMs; i++) {
      const { node, args } = bindArgs(i);
      const started = now();
      const r = await eipctl(lab, node, args);
      if (r.code !== 0) throw new Error(`baseline bind ${eip(i)}: ${r.stderr}`);
      baselineLatency.push(now() - started);
      baselineBound++;
    }
    const baselineWallMs = now() - b0;
    const baselineRate = round(baselineBound / (baselineWallMs / 1000), 2);
    const baseline = {
      bound: baselineBound,
      wallMs: round(baselineWallMs),
      perSec: baselineRate,
      perBind: stats(baselineLatency),
      cappedByTime: baselineBound < s.bindings,
      extrapolatedAllMs: round((s.bindings / baselineRate) * 1000),
    };
    process.stdout.write(
      `  ${baseline.bound} bound in ${baseline.wallMs} ms: ${baseline.perSec}/s (one eipctl: p50 ${baseline.perBind.p50} ms, p99 ${baseline.perBind.p99} ms); ${s.bindings} would take ${round(baseline.extrapolatedAllMs / 1000, 1)} s\n`,
    );
    // The sample bound (if the loop did not reach them), then the seed's move order.
    for (const x of samples) {
      if (x.index < baselineBound) continue;
      const { node, args } = bindArgs(x.index);
      const r = await eipctl(lab, node, args);
      if (r.code !== 0) throw new Error(`baseline bind ${x.eip}: ${r.stderr}`);
    }
    const baseMoves: MoveFigure[] = [];
    for (let k = 0; k < s.moves; k++) {
      const x = samples[k % SAMPLE] as Sample;
      let ok = false;
      baseMoves.push(
        await bench.move(
          x,
          async (from, to) => {
            const rs = await Promise.all([
              eipctl(lab, from.node, [
                "--action",
                "unbind",
                "--eip-ip",
                x.eip,
                "--vmi-ip",
                from.address,
              ]),
              eipctl(lab, to, [
                "--action",
                "bind",
                "--eip-ip",
                x.eip,
                "--vmi-ip",
                cluster.vmi(x.name).address,
              ]),
            ]);
            ok = rs.every((r) => r.code === 0);
          },
          async () => ok,
        ),
      );
    }
    const baselineMoves = summarize(baseMoves);
    printMoves(
      "baseline moves (unbind old and bind new at once, two eipctl processes):",
      baselineMoves,
    );
    loads["end"] = loadavg();

    // ---- the table ----
    const row = (
      metric: string,
      ours: string,
      base: string,
      target = "",
      met = "",
    ): [string, string, string, string, string] => [metric, ours, base, target, met];
    const yes = (ok: boolean) => (ok ? "yes" : "MISSED");
    const sec = (ms: number) => `${round(ms / 1000, 1)} s`;
    const rows = [
      row("metric", "kube-eip operator", "baseline (eipctl script)", "target", "met"),
      row(
        `all ${s.bindings} EipBindings Ready (from t0)`,
        sec(bulk.allReadyMs),
        `${sec(baseline.extrapolatedAllMs)} (extrapolated)`,
        "<= 30 s",
        yes(bulk.allReadyMs <= 30_000),
      ),
      row(
        "objects written (VMIs / EipBindings)",
        `${sec(bulk.vmisWrittenMs)} / ${sec(bulk.bindingsWrittenMs)}`,
        "-",
      ),
      row(
        "bindings applied per second",
        `${round(s.bindings / (bulk.allReadyMs / 1000), 1)}/s`,
        `${baseline.perSec}/s`,
      ),
      row(`sample of ${SAMPLE}: traffic both ways`, sec(bulk.trafficReadyMs), "-"),
      row(
        "reconcile p50 / p99 (bulk, histogram)",
        `${bulkReconcile.p50Ms} / ${bulkReconcile.p99Ms} ms`,
        `one eipctl ${baseline.perBind.p50} / ${baseline.perBind.p99} ms`,
      ),
      row(
        "operator RSS peak / 10 s after idle",
        `${bulk.rssPeakAtIdleMB} / ${rssSettledMB} MB`,
        "-",
        "<= 200 MB",
        yes(bulk.rssPeakAtIdleMB <= 200),
      ),
      row("operator idle (every reconcile done)", sec(bulk.idleMs), "-"),
      row(
        "CPU s until idle: operator / apiserver+etcd / agents / machine",
        `${cpuBulk} / ${round((cpuUsed["apiserver"] ?? NaN) + (cpuUsed["etcd"] ?? NaN), 1)} / ${round((cpuUsed["agent1"] ?? NaN) + (cpuUsed["agent2"] ?? NaN), 1)} / ${cpuUsed["machine"]} of ${round(cpuWindow * os.availableParallelism(), 1)}`,
        "-",
      ),
      row(
        "agents hold node1 / node2 (expected)",
        `${split.node1.held} / ${split.node2.held} (${split.node1.expected} / ${split.node2.expected})`,
        "-",
      ),
      row(
        `move: status write -> traffic, p50 / p99 (n ${s.moves})`,
        `${operatorMoves.afterWrite.p50} / ${operatorMoves.afterWrite.p99} ms`,
        `${baselineMoves.afterWrite.p50} / ${baselineMoves.afterWrite.p99} ms`,
        "<= 1 s p50",
        yes(operatorMoves.afterWrite.p50 <= 1000),
      ),
      row(
        "move: outage incl. re-plug, p50 / max",
        `${operatorMoves.outage.p50} / ${operatorMoves.outage.max} ms`,
        `${baselineMoves.outage.p50} / ${baselineMoves.outage.max} ms`,
      ),
      row(
        "move: pings lost (10 ms), p50 / max; rate",
        `${operatorMoves.lost.p50} / ${operatorMoves.lost.max}; ${operatorMoves.lossRate}`,
        `${baselineMoves.lost.p50} / ${baselineMoves.lost.max}; ${baselineMoves.lossRate}`,
      ),
      row(
        "reconcile p50 / p99 (moves, histogram)",
        `${moveReconcile.p50Ms} / ${moveReconcile.p99Ms} ms (n ${moveReconcile.count})`,
        "-",
      ),
      row("operator RSS peak / at the end", `${rssPeakMB} / ${rssEndMB} MB`, "-"),
    ];
    const widths = [0, 1, 2, 3, 4].map((c) => Math.max(...rows.map((r) => r[c]?.length ?? 0)));
    const line = (r: readonly string[]) =>
      r
        .map((cell, c) => cell.padEnd(widths[c] ?? 0))
        .join("  ")
        .trimEnd();
    process.stdout.write(
      `\n${line(rows[0] ?? [])}\n${widths.map((w) => "-".repeat(w)).join("  ")}\n` +
        rows
          .slice(1)
          .map((r) => line(r))
          .join("\n") +
        `\nloadavg: ${Object.entries(loads)
          .map(([k, v]) => `${k} ${v}`)
          .join("; ")}\n`,
    );
    if (s.jsonFile) {
      writeFileSync(
        s.jsonFile,
        JSON.stringify(
          {
            machine: m,
            settings: s,
            loadavg: loads,
            bulk,
            operatorMoves,
            moveReconcile,
            movesCounters,
            rssPeakMB,
            rssEndMB,
            baseline,
            baselineMoves,
          },
          null,
          2,
        ),
      );
    }
    return 0;
  } finally {
    await lab.down();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`operator-bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
