// The control-path benchmark: how fast a real eip_agent binds, restores and how much memory
// it holds, next to the seed's per-binding command sequence (the BASELINE), on both iptables
// backends. It prints figures and never asserts on them.
//
//   node dist/bench/agent-bench.js [--quick] [--json FILE] [--backend nft|legacy|both]
//          [--resync-interval SECONDS] [--held N,N,...] [--skip-baseline]
//
// Needs root. Everything happens inside a lab it builds itself (one per backend, torn down at
// the end, on failure and on SIGINT/SIGTERM too): kube-eip runs in node 1, the baseline in
// node 2, one after the other so they never compete for the CPU. Nothing is done in the host's
// network namespace and no packet is sent: this measures the control path only.
//
// kube-eip, for each number of held bindings N:
// - restore: SIGKILL the agent, flush our kernel state in node 1, write N bindings into
//   <stateDir>/bindings.json, start the agent; the time from spawn until it logs "kernel
//   state restored" (pino's own timestamp, so our event loop never adds to it); then the
//   kernel is counted (every rule, set member, ip rule and address must be there);
// - sequential: one client binds a new EIP, then unbinds it, S times (N held throughout);
// - concurrent: 32 clients (one channel each) issue C binds between them, then unbind them
//   (N rises to N+C during the bind phase);
// - RSS: VmRSS after the restore (idle), after the load, and the peak (VmHWM), with the V8
//   heap in use from the agent's own metrics endpoint (127.0.0.1:9127 inside node 1);
// - profile: with the agent stopped, one bind and one unbind are applied by the agent's own
//   kernel managers in a child process inside node 1, every command timed (where a bind's
//   time goes), plus a full re-read (what each restore and each periodic resync costs), then
//   a cold restore by the same managers into a flushed kernel;
// - warm restore: start the agent again on a kernel that is already right (the common restart).
//
// Baseline, for N in 0 and 1,000: seedSetup once, N bindings loaded in bulk (the exact rules,
// set members, ip rules and addresses seedBind makes), then seedBind run command by command
// through `ip netns exec`: S sequential binds (each removed again, untimed), then C binds from
// 32 concurrent loops (held rises to N+C; removed again, untimed). The seed's agent ran its
// commands one at a time, so its real rate is the sequential one; the concurrent figure is
// what the same commands could do at best. Its iptables commands have no -w, so a legacy
// command that meets the xtables lock is retried (counted) as -w would. Both phases stop
// issuing at a time cap and say so.
import { writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { AgentClient, type EipOpRsp } from "../src/common/agent-api.js";
import { type DesiredState, ROUTE_TABLE_ID, RULE_PRIORITY } from "../src/model/desired.js";
import { type PlanConfig, plan } from "../src/model/plan.js";
import { BindingStore } from "../src/agent/store.js";
import type { Change, HeldBinding } from "../src/agent/binding-table.js";
import type { IptablesMode } from "../src/kernel/iptables.js";
import { kernelSubsystems } from "../src/kernel/kernel-subsystems.js";
import {
  CommandError,
  ExecRunner,
  type CommandRunner,
  type RunResult,
} from "../src/kernel/runner.js";
import { defaultPrefix, Lab, type LabProcess } from "../src/lab/lab.js";
import { listNamespaces } from "../src/lab/netns.js";
import { type Exec, type SeedNode, seedBind, seedSetup } from "../src/lab/seed-agent.js";
import {
  type LatencyStats,
  intToIpv4,
  ipv4ToInt,
  machine,
  mb,
  median,
  nodePid,
  now,
  readStatusKb,
  round,
  sleep,
  stats,
} from "./common.js";

const AGENT_BIN = fileURLToPath(new URL("../src/bin/eip_agent.js", import.meta.url));
const SELF = fileURLToPath(import.meta.url);

// ---- the benchmark's own network plan (not the lab's: its public /24 is far too small) ----

const EIP_CIDR = "100.64.0.0/10";
const EIP_PREFIX = "10";
const GATEWAY_IP = "100.64.0.1";
const GATEWAY_DEV = "eth1"; // the lab node's device on the public segment
const INTERNAL_NET = "10.0.0.0/8";
const AGENT_NODE = 1;
/** Inside node 1's namespace: scraped for the V8 heap figures. */
const METRICS_ADDRESS = "127.0.0.1:9127";
const BASELINE_NODE = 2;

/** Held bindings: EIPs from 100.64.1.0, VMIs from 10.200.0.1. */
const HELD_EIP_BASE = ipv4ToInt("100.64.1.0");
const HELD_VMI_BASE = ipv4ToInt("10.200.0.1");
/** Bindings made and removed by the measurements: never one of the held ones. */
const PROBE_EIP_BASE = ipv4ToInt("100.65.0.0");
const PROBE_VMI_BASE = ipv4ToInt("10.201.0.0");
/** The profile child's extra bindings. */
const PROFILE_EIP_BASE = ipv4ToInt("100.66.0.0");
const PROFILE_VMI_BASE = ipv4ToInt("10.202.0.0");

interface Pair {
  readonly eip: string;
  readonly vmi: string;
}

function heldPair(i: number): Pair {
  return { eip: intToIpv4(HELD_EIP_BASE + i), vmi: intToIpv4(HELD_VMI_BASE + i) };
}

let probeSerial = 0;
function nextProbe(): Pair {
  const k = probeSerial++;
  return { eip: intToIpv4(PROBE_EIP_BASE + k), vmi: intToIpv4(PROBE_VMI_BASE + k) };
}

// ---- settings ----

interface Settings {
  readonly quick: boolean;
  /** Held bindings for kube-eip. */
  readonly agentHeld: readonly number[];
  readonly seqSamples: number;
  readonly concBinds: number;
  readonly concurrency: number;
  readonly warmup: number;
  /** Held bindings for the baseline. */
  readonly baseHeld: readonly number[];
  readonly baseSeqSamples: number;
  readonly baseConcBinds: number;
  readonly baseSeqCapMs: number;
  readonly baseConcCapMs: number;
  readonly agentPhaseCapMs: number;
  readonly profileIterations: number;
  readonly resyncIntervalSec: number;
  readonly backends: readonly IptablesMode[];
  readonly skipBaseline: boolean;
  readonly jsonFile: string | undefined;
}

const FULL = {
  agentHeld: [0, 1000, 10000],
  seqSamples: 200,
  concBinds: 1000,
  concurrency: 32,
  warmup: 5,
  baseHeld: [0, 1000],
  baseSeqSamples: 200,
  baseConcBinds: 1000,
  baseSeqCapMs: 60_000,
  baseConcCapMs: 90_000,
  agentPhaseCapMs: 180_000,
  profileIterations: 7,
};

const QUICK = {
  agentHeld: [0, 100],
  seqSamples: 30,
  concBinds: 200,
  concurrency: 32,
  warmup: 3,
  baseHeld: [0, 100],
  baseSeqSamples: 20,
  baseConcBinds: 100,
  baseSeqCapMs: 10_000,
  baseConcCapMs: 10_000,
  agentPhaseCapMs: 30_000,
  profileIterations: 3,
};

const USAGE =
  "usage: node dist/bench/agent-bench.js [--quick] [--json FILE] [--backend nft|legacy|both]\n" +
  "           [--resync-interval SECONDS] [--held N,N,...] [--skip-baseline]\n" +
  "  --held: kube-eip's held-binding levels (default 0,1000,10000; --quick 0,100)\n" +
  "  --resync-interval: the agent's periodic re-read (default 10 s, the agent's default)\n";

function parseSettings(argv: readonly string[]): Settings {
  let quick = false;
  let jsonFile: string | undefined;
  let backends: IptablesMode[] = ["nft", "legacy"];
  let resync = 10; // the agent's default
  let held: number[] | undefined;
  let skipBaseline = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value\n${USAGE}`);
      return v;
    };
    if (arg === "--quick") quick = true;
    else if (arg === "--json") jsonFile = value();
    else if (arg === "--backend") {
      const v = value();
      if (v === "both") backends = ["nft", "legacy"];
      else if (v === "nft" || v === "legacy") backends = [v];
      else throw new Error(`--backend must be nft, legacy or both\n${USAGE}`);
    } else if (arg === "--resync-interval") {
      resync = Number(value());
      if (!Number.isInteger(resync) || resync < 1) throw new Error("--resync-interval: seconds");
    } else if (arg === "--held") {
      held = value()
        .split(",")
        .map((x) => Number(x));
      if (!held.every((x) => Number.isInteger(x) && x >= 0 && x <= 60000)) {
        throw new Error("--held: a comma-separated list of whole numbers up to 60000");
      }
    } else if (arg === "--skip-baseline") {
      skipBaseline = true;
    } else if (arg === "--help" || arg === "-h") {
      process.stdout.write(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}\n${USAGE}`);
  }
  const preset = quick ? QUICK : FULL;
  return {
    quick,
    ...preset,
    agentHeld: held ?? preset.agentHeld,
    resyncIntervalSec: resync,
    backends,
    skipBaseline,
    jsonFile,
  };
}

// ---- small helpers ----

function errText(err: unknown): string {
  if (err instanceof CommandError)
    return `${err.command} ${err.args.slice(0, 6).join(" ")}: ${err.stderr.trim()}`;
  return err instanceof Error ? err.message : String(err);
}

interface PhaseResult {
  readonly issued: number;
  readonly ok: number;
  readonly failures: number;
  readonly failureSamples: readonly string[];
  readonly wallMs: number;
  /** Successful operations per second of wall time. */
  readonly perSec: number;
  readonly latency: LatencyStats;
  readonly cappedByTime: boolean;
}

/**
 * `total` operations from `concurrency` loops; each loop takes the next index until all are
 * issued or `capMs` has passed. An operation resolves to undefined when it succeeded, or to
 * the reason it failed.
 */
async function runLoops(
  total: number,
  concurrency: number,
  capMs: number,
  op: (index: number, loop: number) => Promise<string | undefined>,
): Promise<PhaseResult> {
  const latencies: number[] = [];
  const failures: string[] = [];
  let next = 0;
  let capped = false;
  const start = now();
  const deadline = start + capMs;
  const loop = async (w: number) => {
    for (;;) {
      if (next >= total) return;
      if (now() > deadline) {
        capped = true;
        return;
      }
      const k = next++;
      const t = now();
      let failure: string | undefined;
      try {
        failure = await op(k, w);
      } catch (err) {
        failure = errText(err);
      }
      const ms = now() - t;
      if (failure === undefined) latencies.push(ms);
      else failures.push(failure);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => loop(w)));
  const wallMs = now() - start;
  return {
    issued: next,
    ok: latencies.length,
    failures: failures.length,
    failureSamples: [...new Set(failures)].slice(0, 3),
    wallMs: round(wallMs),
    perSec: round(latencies.length / (wallMs / 1000)),
    latency: stats(latencies),
    cappedByTime: capped,
  };
}

// ---- the kernel of a lab node: counting and flushing our state ----

interface KernelCounts {
  readonly dnat: number;
  readonly snat: number;
  readonly forward: number;
  readonly ipsetEip: number;
  readonly ipsetVmi: number;
  readonly rules: number;
  readonly addresses: number;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function jsonArray(text: string): unknown[] {
  const parsed: unknown = JSON.parse(text.trim() === "" ? "[]" : text);
  return Array.isArray(parsed) ? (parsed as unknown[]) : [];
}

async function ipsetSize(lab: Lab, node: number, set: string): Promise<number> {
  try {
    const { stdout } = await lab.nodeExec(node, ["ipset", "list", "-t", set]);
    const match = /Number of entries: (\d+)/.exec(stdout);
    return match ? Number(match[1]) : 0;
  } catch {
    return 0; // no such set yet
  }
}

async function ruleCount(lab: Lab, node: number): Promise<number> {
  const { stdout } = await lab.nodeExec(node, ["ip", "-json", "-N", "rule", "show"]);
  return jsonArray(stdout).filter((r) => isRecord(r) && r.priority === RULE_PRIORITY).length;
}

async function countKernel(lab: Lab, node: number, mode: IptablesMode): Promise<KernelCounts> {
  const count = (text: string, prefix: string) =>
    text.split("\n").filter((line) => line.startsWith(prefix)).length;
  const [nat, filter, ipsetEip, ipsetVmi, rules, addrs] = await Promise.all([
    lab.nodeExec(node, [`iptables-${mode}-save`, "-t", "nat"]),
    lab.nodeExec(node, [`iptables-${mode}-save`, "-t", "filter"]),
    ipsetSize(lab, node, "kube-eip-eip"),
    ipsetSize(lab, node, "kube-eip-vmi"),
    ruleCount(lab, node),
    lab.nodeExec(node, ["ip", "-json", "-4", "addr", "show", "dev", GATEWAY_DEV]),
  ]);
  const addresses = jsonArray(addrs.stdout).reduce<number>(
    (sum, link) =>
      sum + (isRecord(link) && Array.isArray(link.addr_info) ? link.addr_info.length : 0),
    0,
  );
  return {
    dnat: count(nat.stdout, "-A KUBE-EIP-PREROUTING "),
    snat: count(nat.stdout, "-A KUBE-EIP-POSTROUTING "),
    // The agent's chain also holds the one conntrack reply rule.
    forward: Math.max(0, count(filter.stdout, "-A KUBE-EIP-FORWARD ") - 1),
    ipsetEip,
    ipsetVmi,
    rules,
    addresses,
  };
}

/** Whether the node holds exactly `n` bindings' worth of state (forward: agent only). */
function holds(c: KernelCounts, n: number, withForward: boolean): boolean {
  return (
    c.dnat === n &&
    c.snat === n &&
    (!withForward || c.forward === n) &&
    c.ipsetEip === n &&
    c.ipsetVmi === n &&
    c.rules === n &&
    c.addresses === n
  );
}

function describeCounts(c: KernelCounts): string {
  return `dnat ${c.dnat}, snat ${c.snat}, forward ${c.forward}, ipset ${c.ipsetEip}/${c.ipsetVmi}, ip rules ${c.rules}, addresses ${c.addresses}`;
}

/** Removes our state from a node, leaving chains, sets, jumps in place (as after a wipe). */
async function flushKernel(lab: Lab, node: number, mode: IptablesMode): Promise<void> {
  const ipt = `iptables-${mode}`;
  await lab.nodeExec(node, [ipt, "-w", "5", "-t", "nat", "-F", "KUBE-EIP-PREROUTING"]);
  await lab.nodeExec(node, [ipt, "-w", "5", "-t", "nat", "-F", "KUBE-EIP-POSTROUTING"]);
  await lab.nodeExec(node, [ipt, "-w", "5", "-t", "filter", "-F", "KUBE-EIP-FORWARD"]);
  await lab.nodeExec(node, ["ipset", "flush", "kube-eip-eip"]);
  await lab.nodeExec(node, ["ipset", "flush", "kube-eip-vmi"]);
  const rules = await ruleCount(lab, node);
  if (rules > 0) {
    // One process for all of them: `ip rule del` one by one would take minutes at 10,000.
    const input = `rule del priority ${RULE_PRIORITY}\n`.repeat(rules);
    await lab.nodeExec(node, ["ip", "-batch", "-"], { input });
  }
  await lab.nodeExec(node, ["ip", "addr", "flush", "dev", GATEWAY_DEV]);
  await lab.nodeExec(node, ["ip", "route", "flush", "table", String(ROUTE_TABLE_ID)]);
}

// ---- kube-eip: the agent in node 1 ----

interface RestoreResult {
  readonly bindings: number;
  /** Whether our kernel state had been flushed first. */
  readonly flushed: boolean;
  /** Spawn until the agent logged "kernel state restored". */
  readonly spawnToRestoredMs: number;
  /** "restoring saved bindings" until "kernel state restored": the restore proper. */
  readonly restoreProperMs: number;
  readonly spawnToServingMs: number;
  readonly verified: boolean;
  readonly counts: KernelCounts;
}

interface Rss {
  /** VmRSS one second after the restore. */
  readonly idleMB: number;
  /** VmHWM at that point: the restore's own peak. */
  readonly peakAfterRestoreMB: number;
  /** VmRSS right after the sequential and concurrent load. */
  readonly afterLoadMB: number;
  /** VmHWM after the load: the peak of the agent's whole life. */
  readonly peakMB: number;
  /** V8 heap in use (the agent's own metrics), idle and after the load. */
  readonly heapUsedIdleMB: number;
  readonly heapUsedAfterLoadMB: number;
}

interface ProfileStep {
  readonly ms: number;
  readonly commands: readonly {
    readonly command: string;
    readonly ms: number;
    readonly lines: number;
  }[];
}

interface ApplyProfile {
  readonly saveMs: number;
  readonly planMs: number;
  /** Each kernel subsystem's sync, in the agent's order (ipset, iptables, iproute, sysctl). */
  readonly steps: readonly NamedStep[];
  readonly totalMs: number;
}

interface NamedStep extends ProfileStep {
  readonly name: string;
}

interface ProfileChildOutput {
  readonly held: number;
  readonly spawnFloorMs: number;
  readonly reread: ApplyProfile;
  readonly binds: readonly ApplyProfile[];
  readonly unbinds: readonly ApplyProfile[];
}

interface ProfileSummary {
  readonly held: number;
  readonly iterations: number;
  /** Cost of starting one trivial process in the node (every kernel command pays it). */
  readonly spawnFloorMs: number;
  /** Medians over the iterations. */
  readonly bind: Record<string, number>;
  readonly unbind: Record<string, number>;
  /** One full re-read with nothing to write (each restore and each periodic resync). */
  readonly reread: Record<string, number>;
  /** One full re-read and write of every binding into a flushed kernel (a cold restore). */
  readonly coldRestore: Record<string, number> | undefined;
}

interface AgentLevel {
  readonly held: number;
  readonly restore: RestoreResult;
  readonly seqBind: LatencyStats;
  readonly seqUnbind: LatencyStats;
  readonly seqFailures: number;
  readonly seqBindsPerSec: number;
  readonly concBind: PhaseResult;
  readonly concUnbind: PhaseResult;
  readonly concVerified: boolean;
  readonly concCounts: KernelCounts;
  readonly rss: Rss;
  readonly profile: ProfileSummary | undefined;
  readonly warmRestore: RestoreResult;
}

interface LogLine {
  readonly msg: string;
  readonly time: number;
}

function logLines(proc: LabProcess): LogLine[] {
  const lines: LogLine[] = [];
  for (const text of proc.output().split("\n")) {
    if (!text.startsWith("{")) continue;
    try {
      const doc: unknown = JSON.parse(text);
      if (isRecord(doc) && typeof doc.msg === "string" && typeof doc.time === "string") {
        lines.push({ msg: doc.msg, time: Date.parse(doc.time) });
      }
    } catch {
      // not a log line
    }
  }
  return lines;
}

class AgentUnderTest {
  proc: LabProcess | undefined;
  private serial = 0;
  readonly stateDir: string;
  readonly socket: string;
  readonly ns: string;

  constructor(
    private readonly lab: Lab,
    private readonly mode: IptablesMode,
    private readonly settings: Settings,
  ) {
    this.stateDir = lab.stateDir("bench-agent");
    this.socket = join(this.stateDir, "agent.sock");
    this.ns = lab.nodeNamespace(AGENT_NODE);
  }

  args(): string[] {
    return [
      "--iptables-mode",
      this.mode,
      "--eip-cidr",
      EIP_CIDR,
      "--gateway-ip",
      GATEWAY_IP,
      "--gateway-dev",
      GATEWAY_DEV,
      "--internal-net",
      INTERNAL_NET,
      "--listen-address",
      "127.0.0.1",
      "--metrics-address",
      METRICS_ADDRESS,
      "--state-dir",
      this.stateDir,
      "--unix-socket",
      this.socket,
      "--seed-state-dir",
      join(this.stateDir, "no-seed"),
      "--resync-interval",
      String(this.settings.resyncIntervalSec),
      "--log-level",
      "info",
    ];
  }

  writeState(n: number): void {
    const since = new Date().toISOString();
    const bindings = Array.from({ length: n }, (_, i) => ({ ...heldPair(i), since }));
    writeFileSync(join(this.stateDir, "bindings.json"), JSON.stringify({ version: 1, bindings }));
  }

  /** Starts the agent and measures its restore of `n` bindings (already in its state file). */
  async start(n: number, flushed: boolean): Promise<RestoreResult> {
    const t0 = Date.now();
    const proc = await this.lab.spawnIn(this.ns, [process.execPath, AGENT_BIN, ...this.args()], {
      name: `agent-${this.mode}-${++this.serial}`,
      waitFor: '"msg":"serving gRPC"',
      timeoutMs: 300_000,
    });
    this.proc = proc;
    const lines = logLines(proc);
    const at = (msg: string) => lines.find((l) => l.msg === msg)?.time;
    const restored = at("kernel state restored");
    const restoring = at("restoring saved bindings");
    const serving = at("serving gRPC");
    if (restored === undefined) {
      throw new Error(
        `agent did not restore its kernel state; output:\n${proc.output().slice(-2000)}`,
      );
    }
    const counts = await countKernel(this.lab, AGENT_NODE, this.mode);
    return {
      bindings: n,
      flushed,
      spawnToRestoredMs: restored - t0,
      restoreProperMs: restoring === undefined ? NaN : restored - restoring,
      spawnToServingMs: serving === undefined ? NaN : serving - t0,
      verified: holds(counts, n, true),
      counts,
    };
  }

  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    this.proc = undefined;
    proc.child.kill("SIGKILL"); // by PID: the process we spawned
    await proc.exited;
  }

  pid(): number {
    if (!this.proc) throw new Error("agent not running");
    return nodePid(this.proc);
  }
}

async function operate(
  client: AgentClient,
  action: "bind" | "unbind",
  p: Pair,
): Promise<string | undefined> {
  const rsp: EipOpRsp = await client.eipOperate({ action, eipAddr: p.eip, vmiAddr: p.vmi });
  return rsp.result === "Succeed" ? undefined : `${action} ${p.eip}->${p.vmi}: ${rsp.reason}`;
}

async function agentLevel(
  lab: Lab,
  agent: AgentUnderTest,
  mode: IptablesMode,
  n: number,
  s: Settings,
  log: (line: string) => void,
): Promise<AgentLevel> {
  // Cold restore: SIGKILL, wipe our kernel state, N bindings in the state file, start.
  const wasRunning = agent.proc !== undefined;
  await agent.kill();
  if (wasRunning) await flushKernel(lab, AGENT_NODE, mode);
  const flushedCounts = await countKernel(lab, AGENT_NODE, mode);
  if (!holds(flushedCounts, 0, true))
    throw new Error(`flush left state behind: ${describeCounts(flushedCounts)}`);
  agent.writeState(n);
  const restore = await agent.start(n, wasRunning);
  log(
    `  restore of ${n} into a flushed kernel: ${restore.spawnToRestoredMs} ms from spawn` +
      ` (${restore.restoreProperMs} ms in the agent), kernel ${restore.verified ? "verified" : `WRONG: ${describeCounts(restore.counts)}`}`,
  );
  await sleep(1000);
  const pid = agent.pid();
  const idleKb = readStatusKb(pid, "VmRSS");
  const restorePeakKb = readStatusKb(pid, "VmHWM");
  const heapIdle = await heapUsedMB(lab);

  const client = new AgentClient(`unix:${agent.socket}`);
  const clients = Array.from(
    { length: s.concurrency },
    () => new AgentClient(`unix:${agent.socket}`),
  );
  try {
    await Promise.all([client, ...clients].map((c) => c.listBindings()));
    for (let i = 0; i < s.warmup; i++) {
      const p = nextProbe();
      await operate(client, "bind", p);
      await operate(client, "unbind", p);
    }

    // Sequential: bind then unbind, S times; N held throughout.
    const binds: number[] = [];
    const unbinds: number[] = [];
    let seqFailures = 0;
    const seqDeadline = now() + s.agentPhaseCapMs;
    for (let i = 0; i < s.seqSamples && now() < seqDeadline; i++) {
      const p = nextProbe();
      let t = now();
      const bound = await operate(client, "bind", p).catch(errText);
      if (bound === undefined) binds.push(now() - t);
      else seqFailures++;
      t = now();
      const unbound = await operate(client, "unbind", p).catch(errText);
      if (unbound === undefined) unbinds.push(now() - t);
      else seqFailures++;
    }
    const seqBind = stats(binds);
    const seqUnbind = stats(unbinds);
    const seqBindsPerSec = round(binds.length / (binds.reduce((a, b) => a + b, 0) / 1000));
    log(
      `  sequential: bind p50 ${seqBind.p50} ms p99 ${seqBind.p99} ms; unbind p50 ${seqUnbind.p50} ms p99 ${seqUnbind.p99} ms`,
    );

    // Concurrent: C binds from 32 clients, then the same C unbound.
    const pairs = Array.from({ length: s.concBinds }, () => nextProbe());
    const concBind = await runLoops(pairs.length, s.concurrency, s.agentPhaseCapMs, (k, w) =>
      operate(clients[w] as AgentClient, "bind", pairs[k] as Pair),
    );
    const concCounts = await countKernel(lab, AGENT_NODE, mode);
    const concVerified = holds(concCounts, n + concBind.ok, true);
    const concUnbind = await runLoops(concBind.issued, s.concurrency, s.agentPhaseCapMs, (k, w) =>
      operate(clients[w] as AgentClient, "unbind", pairs[k] as Pair),
    );
    log(
      `  concurrent: ${concBind.perSec} binds/s, ${concUnbind.perSec} unbinds/s (${s.concurrency} clients); kernel after binds ${concVerified ? "verified" : `WRONG: ${describeCounts(concCounts)}`}`,
    );
    const afterLoadKb = readStatusKb(pid, "VmRSS");
    const peakKb = readStatusKb(pid, "VmHWM");
    const heapAfterLoad = await heapUsedMB(lab);
    const rss: Rss = {
      idleMB: mb(idleKb),
      peakAfterRestoreMB: mb(restorePeakKb),
      afterLoadMB: mb(afterLoadKb),
      peakMB: mb(peakKb),
      heapUsedIdleMB: heapIdle,
      heapUsedAfterLoadMB: heapAfterLoad,
    };
    log(
      `  RSS idle ${rss.idleMB} MB (peak so far ${rss.peakAfterRestoreMB} MB), after load ${rss.afterLoadMB} MB, peak ${rss.peakMB} MB; V8 heap used ${heapIdle} MB idle, ${heapAfterLoad} MB after load`,
    );

    // Profile with the agent stopped (its periodic resync would undo the child's writes).
    await agent.kill();
    let profile: ProfileSummary | undefined;
    if (n > 0) {
      profile = await profileInNode(lab, agent, mode, n, s.profileIterations);
      log(
        `  profile of one bind: ${Object.entries(profile.bind)
          .map(([k, v]) => `${k.trim()} ${v} ms`)
          .join(", ")}`,
      );
      // And of a cold restore: the same managers write every binding into a flushed kernel.
      await flushKernel(lab, AGENT_NODE, mode);
      const coldRestore = await profileCold(lab, agent, mode, n);
      profile = { ...profile, coldRestore };
      log(`  profile of a cold restore: total ${coldRestore.total} ms`);
    }

    // Warm restore: the kernel is already right.
    const warmRestore = await agent.start(n, false);
    log(
      `  restore of ${n} into an intact kernel: ${warmRestore.spawnToRestoredMs} ms from spawn` +
        ` (${warmRestore.restoreProperMs} ms in the agent), kernel ${warmRestore.verified ? "verified" : `WRONG: ${describeCounts(warmRestore.counts)}`}`,
    );
    return {
      held: n,
      restore,
      seqBind,
      seqUnbind,
      seqFailures,
      seqBindsPerSec,
      concBind,
      concUnbind,
      concVerified,
      concCounts,
      rss,
      profile,
      warmRestore,
    };
  } finally {
    client.close();
    for (const c of clients) c.close();
  }
}

// ---- the profile child: the agent's own kernel managers, inside node 1 ----

class TimingRunner implements CommandRunner {
  calls: { command: string; ms: number; lines: number }[] = [];
  constructor(private readonly inner: CommandRunner) {}
  async run(
    command: string,
    args: readonly string[],
    options?: { input?: string },
  ): Promise<RunResult> {
    const t = now();
    try {
      return await this.inner.run(command, args, options);
    } finally {
      const label = [command, ...args.slice(0, 5)].join(" ");
      const lines = options?.input ? options.input.split("\n").filter((l) => l !== "").length : 0;
      this.calls.push({ command: label, ms: round(now() - t, 2), lines });
    }
  }
  take(): { command: string; ms: number; lines: number }[] {
    const calls = this.calls;
    this.calls = [];
    return calls;
  }
}

async function profileChild(argv: readonly string[]): Promise<void> {
  const [stateFile, workDir, modeArg, iterationsArg, kind] = argv;
  if (stateFile === undefined || workDir === undefined || iterationsArg === undefined) {
    throw new Error("--profile-child STATE_FILE WORK_DIR MODE ITERATIONS [warm|cold]");
  }
  if (modeArg !== "nft" && modeArg !== "legacy") throw new Error(`bad mode ${String(modeArg)}`);
  const mode: IptablesMode = modeArg;
  const iterations = Number(iterationsArg);
  const runner = new TimingRunner(new ExecRunner());
  const held = (await new BindingStore(dirname(stateFile)).load()) ?? [];
  const config: PlanConfig = {
    internalNets: [INTERNAL_NET],
    gatewayIp: GATEWAY_IP,
    gatewayDev: GATEWAY_DEV,
    eipCidr: EIP_CIDR,
    arpPoisoning: false,
    cniDev: "cni0",
  };
  // The agent's own subsystems, built by the agent's builder.
  const subsystems = kernelSubsystems({
    runner,
    dataplane: "iptables",
    iptablesMode: mode,
    gatewayDev: GATEWAY_DEV,
    eipCidr: EIP_CIDR,
  });
  const store = new BindingStore(workDir);
  const step = async (fn: () => Promise<number>): Promise<ProfileStep> => {
    runner.take();
    const t = now();
    await fn();
    return { ms: round(now() - t, 2), commands: runner.take() };
  };
  // What the agent's Dataplane.applyOnce does: save, plan, then each subsystem's batch. The
  // agent runs the batches at once when its sets and chains exist; here they run in order
  // so that each one can be timed on its own.
  const apply = async (
    bindings: readonly HeldBinding[],
    reread: boolean,
    change?: Change,
  ): Promise<ApplyProfile> => {
    const t0 = now();
    // Like the agent: a snapshot at start, then one journal append per change.
    await (change ? store.record([change], bindings) : store.save(bindings));
    const t1 = now();
    const desired: DesiredState = plan(config, bindings);
    const t2 = now();
    const steps: NamedStep[] = [];
    for (const s of subsystems) {
      steps.push({ name: s.name, ...(await step(() => s.sync(desired, { reread }))) });
    }
    return {
      saveMs: round(t1 - t0, 2),
      planMs: round(t2 - t1, 2),
      steps,
      totalMs: round(now() - t0, 2),
    };
  };
  const floor: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = now();
    await runner.run("true", []);
    floor.push(now() - t);
  }
  runner.take();
  const reread = await apply(held, true);
  if (kind === "cold") {
    const out: ProfileChildOutput = {
      held: held.length,
      spawnFloorMs: round(median(floor), 2),
      reread,
      binds: [],
      unbinds: [],
    };
    process.stdout.write(JSON.stringify(out) + "\n");
    return;
  }
  const binds: ApplyProfile[] = [];
  const unbinds: ApplyProfile[] = [];
  const since = new Date().toISOString();
  for (let k = 0; k < iterations; k++) {
    const extra = {
      eip: intToIpv4(PROFILE_EIP_BASE + k),
      vmi: intToIpv4(PROFILE_VMI_BASE + k),
      since,
    };
    binds.push(await apply([...held, extra], false, { op: "bind", ...extra }));
    unbinds.push(await apply(held, false, { op: "unbind", eip: extra.eip, vmi: extra.vmi }));
  }
  const out: ProfileChildOutput = {
    held: held.length,
    spawnFloorMs: round(median(floor), 2),
    reread,
    binds,
    unbinds,
  };
  process.stdout.write(JSON.stringify(out) + "\n");
}

function flattenProfile(p: ApplyProfile): Record<string, number> {
  const cmd = (s: ProfileStep) => s.commands.reduce((a, c) => a + c.ms, 0);
  return {
    "save state": p.saveMs,
    plan: p.planMs,
    ...Object.fromEntries(p.steps.map((s) => [s.name, s.ms])),
    "(of which commands)": p.steps.reduce((a, s) => a + cmd(s), 0),
    total: p.totalMs,
  };
}

function flattenReread(p: ApplyProfile): Record<string, number> {
  const out: Record<string, number> = { "save state": p.saveMs, plan: p.planMs };
  for (const s of p.steps) {
    for (const c of s.commands) out[c.command] = (out[c.command] ?? 0) + c.ms;
  }
  for (const s of p.steps) out[`${s.name} (with parse)`] = s.ms;
  out.total = p.totalMs;
  return out;
}

function medianRecord(records: readonly Record<string, number>[]): Record<string, number> {
  const keys = [...new Set(records.flatMap((r) => Object.keys(r)))];
  return Object.fromEntries(keys.map((k) => [k, round(median(records.map((r) => r[k] ?? 0)), 2)]));
}

async function profileInNode(
  lab: Lab,
  agent: AgentUnderTest,
  mode: IptablesMode,
  n: number,
  iterations: number,
): Promise<ProfileSummary> {
  const workDir = lab.stateDir(`bench-profile-${mode}`);
  const { stdout } = await lab.nodeExec(AGENT_NODE, [
    process.execPath,
    SELF,
    "--profile-child",
    join(agent.stateDir, "bindings.json"),
    workDir,
    mode,
    String(iterations),
  ]);
  const out = JSON.parse(stdout) as ProfileChildOutput;
  if (out.held !== n) throw new Error(`profile child saw ${out.held} bindings, expected ${n}`);
  // The command lines of one bind, for the report.
  const commands = (p: ApplyProfile) =>
    p.steps.flatMap((s) =>
      s.commands.map((c) => [`${c.command} [${c.lines} stdin lines]`, c.ms] as const),
    );
  const cmdMedians = (ps: readonly ApplyProfile[]) =>
    medianRecord(ps.map((p) => Object.fromEntries(commands(p).map(([k, v]) => [`  cmd ${k}`, v]))));
  return {
    held: n,
    iterations,
    spawnFloorMs: out.spawnFloorMs,
    bind: { ...medianRecord(out.binds.map(flattenProfile)), ...cmdMedians(out.binds) },
    unbind: { ...medianRecord(out.unbinds.map(flattenProfile)), ...cmdMedians(out.unbinds) },
    reread: flattenReread(out.reread),
    coldRestore: undefined,
  };
}

/** A cold restore by the agent's managers in node 1 (the kernel must have been flushed). */
async function profileCold(
  lab: Lab,
  agent: AgentUnderTest,
  mode: IptablesMode,
  n: number,
): Promise<Record<string, number>> {
  const { stdout } = await lab.nodeExec(AGENT_NODE, [
    process.execPath,
    SELF,
    "--profile-child",
    join(agent.stateDir, "bindings.json"),
    lab.stateDir(`bench-profile-${mode}`),
    mode,
    "0",
    "cold",
  ]);
  const out = JSON.parse(stdout) as ProfileChildOutput;
  const counts = await countKernel(lab, AGENT_NODE, mode);
  if (!holds(counts, n, true)) {
    throw new Error(`the cold-restore profile left the kernel wrong: ${describeCounts(counts)}`);
  }
  const flat = flattenReread(out.reread);
  // Label writes with their size: the reads are the same as in the warm re-read.
  for (const step of out.reread.steps) {
    for (const c of step.commands) {
      if (c.lines > 0 && flat[c.command] !== undefined) {
        flat[`${c.command} [${c.lines} stdin lines]`] = flat[c.command] ?? 0;
        delete flat[c.command];
      }
    }
  }
  const trailer = [...out.reread.steps.map((s) => `${s.name} (with parse)`), "total"];
  return Object.fromEntries([
    ...Object.entries(flat).filter(([k]) => !trailer.includes(k)),
    ...trailer.map((k) => [k, flat[k] ?? NaN] as const),
  ]);
}

/** The V8 heap in use, from the agent's own metrics endpoint (scraped inside node 1). */
async function heapUsedMB(lab: Lab): Promise<number> {
  try {
    const { stdout } = await lab.nodeExec(AGENT_NODE, [
      process.execPath,
      "-e",
      `fetch("http://${METRICS_ADDRESS}/metrics").then((r) => r.text()).then((t) => process.stdout.write(t))`,
    ]);
    const match = /^nodejs_heap_size_used_bytes (\S+)$/m.exec(stdout);
    return match ? round(Number(match[1]) / 2 ** 20) : NaN;
  } catch {
    return NaN;
  }
}

// ---- baseline: the seed's command sequence in node 2 ----

interface BaselineLevel {
  readonly held: number;
  readonly seq: PhaseResult;
  /** The seed's real rate: it ran one binding's commands at a time. */
  readonly seqBindsPerSec: number;
  readonly conc: PhaseResult;
  readonly lockRetries: number;
  readonly verified: boolean;
  readonly counts: KernelCounts;
}

function seedNode(lab: Lab, mode: IptablesMode): SeedNode {
  return {
    iptables: `iptables-${mode}`,
    gatewayIp: GATEWAY_IP,
    gatewayDev: GATEWAY_DEV,
    eipCidr: EIP_CIDR,
    cniDev: lab.node(BASELINE_NODE).bridge,
    cniAddress: lab.node(BASELINE_NODE).bridgeAddress,
    internalNets: [INTERNAL_NET],
  };
}

/** Adds (or removes) bindings exactly as seedBind leaves them, in three commands. */
async function seedBulk(
  lab: Lab,
  mode: IptablesMode,
  pairs: readonly Pair[],
  op: "add" | "del",
): Promise<void> {
  if (pairs.length === 0) return;
  const ipt = op === "add" ? "-A" : "-D";
  const sets = pairs.flatMap((p) => [
    `${op} kube-eip-eip ${p.eip} -exist`,
    `${op} kube-eip-vmi ${p.vmi} -exist`,
  ]);
  const nat = [
    "*nat",
    ...pairs.map((p) => `${ipt} KUBE-EIP-PREROUTING -d ${p.eip} -j DNAT --to-destination ${p.vmi}`),
    ...pairs.map(
      (p) =>
        `${ipt} KUBE-EIP-POSTROUTING -s ${p.vmi} -m set ! --match-set k8s_internal_net dst -j SNAT --to ${p.eip}`,
    ),
    "COMMIT",
  ];
  const ip = pairs.flatMap((p) => [
    `rule ${op} from ${p.vmi} table 1001 priority 1001`,
    `addr ${op} ${p.eip}/${EIP_PREFIX} dev ${GATEWAY_DEV}`,
  ]);
  await lab.nodeExec(BASELINE_NODE, ["ipset", "restore"], { input: sets.join("\n") + "\n" });
  await lab.nodeExec(BASELINE_NODE, [`iptables-${mode}-restore`, "--noflush", "-w", "5"], {
    input: nat.join("\n") + "\n",
  });
  await lab.nodeExec(BASELINE_NODE, ["ip", "-batch", "-"], { input: ip.join("\n") + "\n" });
}

async function baselineLevels(
  lab: Lab,
  mode: IptablesMode,
  s: Settings,
  log: (line: string) => void,
): Promise<BaselineLevel[]> {
  const node = seedNode(lab, mode);
  let lockRetries = 0;
  const exec: Exec = async (argv) => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await lab.nodeExec(BASELINE_NODE, argv);
      } catch (err) {
        // The seed ran iptables without -w: under concurrency, do what -w would do.
        const locked =
          err instanceof CommandError && /xtables lock|holding the xtables/i.test(err.stderr);
        if (!locked || attempt >= 1000) throw err;
        lockRetries++;
        await sleep(2);
      }
    }
  };
  await seedSetup(exec, node);
  // Bulk removal of the seed's /N addresses deletes primaries: keep the secondaries.
  await lab.nodeExec(BASELINE_NODE, [
    "sysctl",
    "-q",
    "-w",
    `net.ipv4.conf.${GATEWAY_DEV}.promote_secondaries=1`,
  ]);
  const levels: BaselineLevel[] = [];
  const seqTimes: number[] = [];
  let held = 0;
  for (const n of s.baseHeld) {
    if (n > held) {
      await seedBulk(
        lab,
        mode,
        Array.from({ length: n - held }, (_, k) => heldPair(held + k)),
        "add",
      );
      held = n;
    }
    const before = await countKernel(lab, BASELINE_NODE, mode);
    if (!holds(before, n, false))
      throw new Error(`baseline preload wrong: ${describeCounts(before)}`);

    // Sequential: seedBind timed, then removed again untimed; N held throughout.
    const seq = await runLoops(s.baseSeqSamples, 1, s.baseSeqCapMs, async () => {
      const p = nextProbe();
      const t = now();
      let failure: string | undefined;
      try {
        await seedBind(exec, node, p.eip, p.vmi);
      } catch (err) {
        failure = errText(err);
      }
      const ms = now() - t;
      await seedBulk(lab, mode, [p], "del").catch(() => {});
      if (failure !== undefined) return failure;
      seqTimes.push(ms);
      return undefined;
    });
    // runLoops' own latency includes the untimed removal: use the bind times alone.
    const seqStats = stats(seqTimes.splice(0));
    const seqOnly: PhaseResult = { ...seq, latency: seqStats };
    const seqBindsPerSec = round(1000 / seqStats.mean);
    log(
      `  baseline ${n} held, sequential: bind p50 ${seqStats.p50} ms p99 ${seqStats.p99} ms, ${seqBindsPerSec} binds/s${seq.cappedByTime ? ` (capped at ${s.baseSeqCapMs / 1000} s: ${seq.issued} binds)` : ""}`,
    );

    // Concurrent: 32 loops of the seed's sequence, held rises to N+C; removed again after.
    const retriesBefore = lockRetries;
    const pairs = Array.from({ length: s.baseConcBinds }, () => nextProbe());
    const conc = await runLoops(pairs.length, s.concurrency, s.baseConcCapMs, async (k) => {
      const p = pairs[k] as Pair;
      await seedBind(exec, node, p.eip, p.vmi);
      return undefined;
    });
    const counts = await countKernel(lab, BASELINE_NODE, mode);
    const verified = holds(counts, n + conc.ok, false);
    log(
      `  baseline ${n} held, ${s.concurrency} loops: ${conc.perSec} binds/s, p50 ${conc.latency.p50} ms p99 ${conc.latency.p99} ms, ${conc.failures} failed, ${lockRetries - retriesBefore} lock retries${conc.cappedByTime ? ` (capped at ${s.baseConcCapMs / 1000} s: ${conc.issued} binds)` : ""}; kernel ${verified ? "verified" : `WRONG: ${describeCounts(counts)}`}`,
    );
    await seedBulk(lab, mode, pairs.slice(0, conc.issued), "del").catch(async () => {
      // A failed bind may have left only part of its state: remove one by one, ignoring gaps.
      for (const p of pairs.slice(0, conc.issued))
        await seedBulk(lab, mode, [p], "del").catch(() => {});
    });
    levels.push({
      held: n,
      seq: seqOnly,
      seqBindsPerSec,
      conc,
      lockRetries: lockRetries - retriesBefore,
      verified,
      counts,
    });
  }
  return levels;
}

// ---- one backend ----

interface BackendResult {
  readonly mode: IptablesMode;
  readonly labPrefix: string;
  readonly agent: readonly AgentLevel[];
  readonly baseline: readonly BaselineLevel[];
  readonly wallSec: number;
  readonly error?: string;
}

async function benchBackend(
  mode: IptablesMode,
  s: Settings,
  prefix: string,
): Promise<BackendResult> {
  const start = now();
  const log = (line: string) =>
    process.stdout.write(`[${mode} ${round((now() - start) / 1000)}s] ${line}\n`);
  const lab = await Lab.up({ nodes: 2, iptablesModes: mode, removeOnExit: true, prefix });
  log(`lab ${lab.prefix} up (nodes 1 and 2, iptables-${mode})`);
  const agentLevels: AgentLevel[] = [];
  const baseline: BaselineLevel[] = [];
  let error: string | undefined;
  const agent = new AgentUnderTest(lab, mode, s);
  try {
    for (const n of s.agentHeld) {
      log(`kube-eip with ${n} held bindings`);
      agentLevels.push(await agentLevel(lab, agent, mode, n, s, log));
    }
    await agent.kill();
    if (!s.skipBaseline) {
      log("baseline (the seed's command sequence)");
      baseline.push(...(await baselineLevels(lab, mode, s, log)));
    }
  } catch (err) {
    error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    log(`FAILED: ${error}`);
  } finally {
    await agent.kill().catch(() => {});
    await lab.down();
  }
  return {
    mode,
    labPrefix: lab.prefix,
    agent: agentLevels,
    baseline,
    wallSec: round((now() - start) / 1000),
    error,
  };
}

// ---- report ----

interface Row {
  readonly metric: string;
  readonly held: string;
  readonly kube: string;
  readonly base: string;
  readonly target: string;
  readonly met: string;
}

const ms = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "-" : `${round(x)} ms`);
const perSec = (x: number | undefined) =>
  x === undefined || Number.isNaN(x) ? "-" : `${Math.round(x)}/s`;
const yesNo = (ok: boolean) => (ok ? "yes" : "MISSED");

function rows(r: BackendResult, s: Settings): Row[] {
  const out: Row[] = [];
  const big = Math.max(...s.agentHeld);
  const mid = s.quick ? Math.max(...s.baseHeld) : 1000;
  const evaluate = !s.quick;
  const base = (n: number) => r.baseline.find((b) => b.held === n);
  const add = (
    metric: string,
    held: number | string,
    kube: string,
    baseText: string,
    target = "",
    met = "",
  ) => out.push({ metric, held: String(held), kube, base: baseText, target, met });
  for (const a of r.agent) {
    const b = base(a.held);
    const isBig = a.held === big;
    add(
      "bind latency p50, 1 client",
      a.held,
      ms(a.seqBind.p50),
      b ? ms(b.seq.latency.p50) : "not run",
      isBig ? "<= 20 ms" : "",
      isBig && evaluate ? yesNo(a.seqBind.p50 <= 20) : "",
    );
  }
  for (const a of r.agent) {
    const b = base(a.held);
    const isBig = a.held === big;
    add(
      "bind latency p99, 1 client",
      a.held,
      ms(a.seqBind.p99),
      b ? ms(b.seq.latency.p99) : "not run",
      isBig ? "<= 100 ms" : "",
      isBig && evaluate ? yesNo(a.seqBind.p99 <= 100) : "",
    );
  }
  for (const a of r.agent)
    add(
      "unbind latency p50 / p99, 1 client",
      a.held,
      `${ms(a.seqUnbind.p50)} / ${ms(a.seqUnbind.p99)}`,
      "-",
    );
  for (const a of r.agent) {
    const b = base(a.held);
    add(
      "binds/s, 1 client sequential",
      a.held,
      perSec(a.seqBindsPerSec),
      b ? perSec(b.seqBindsPerSec) : "not run",
    );
  }
  for (const a of r.agent) {
    const b = base(a.held);
    const isMid = a.held === mid;
    const ratio = b ? a.concBind.perSec / b.seqBindsPerSec : NaN;
    add(
      `binds/s, ${s.concurrency} concurrent clients`,
      a.held,
      perSec(a.concBind.perSec) + (a.concBind.cappedByTime ? " (capped)" : ""),
      b ? `${perSec(b.conc.perSec)}${b.conc.cappedByTime ? " (capped)" : ""}` : "not run",
      isMid ? ">= 20x seed" : "",
      isMid && b && evaluate
        ? `${yesNo(ratio >= 20)} (${round(ratio)}x seq, ${round(a.concBind.perSec / b.conc.perSec)}x 32 loops)`
        : "",
    );
  }
  for (const a of r.agent) {
    add(
      `bind p50 / p99 under ${s.concurrency} clients`,
      a.held,
      `${ms(a.concBind.latency.p50)} / ${ms(a.concBind.latency.p99)}`,
      (() => {
        const b = base(a.held);
        return b ? `${ms(b.conc.latency.p50)} / ${ms(b.conc.latency.p99)}` : "not run";
      })(),
    );
  }
  for (const a of r.agent)
    add(`unbinds/s, ${s.concurrency} concurrent clients`, a.held, perSec(a.concUnbind.perSec), "-");
  for (const a of r.agent) {
    if (!a.restore.flushed) {
      add(
        "first start (state file, empty kernel)",
        a.held,
        `${ms(a.restore.spawnToRestoredMs)} (${a.restore.verified ? "verified" : "WRONG"})`,
        "-",
      );
      continue;
    }
    const isBig = a.held === big;
    add(
      "restore after SIGKILL + flush",
      a.held,
      `${ms(a.restore.spawnToRestoredMs)} (${a.restore.verified ? "verified" : "WRONG"})`,
      "-",
      isBig ? "<= 3 s" : "",
      isBig && evaluate ? yesNo(a.restore.spawnToRestoredMs <= 3000 && a.restore.verified) : "",
    );
  }
  for (const a of r.agent) {
    add(
      "restore after SIGKILL, kernel intact",
      a.held,
      `${ms(a.warmRestore.spawnToRestoredMs)} (${a.warmRestore.verified ? "verified" : "WRONG"})`,
      "-",
    );
  }
  for (const a of r.agent) {
    const isBig = a.held === big;
    add(
      "RSS idle / after load / peak",
      a.held,
      `${a.rss.idleMB} / ${a.rss.afterLoadMB} / ${a.rss.peakMB} MB`,
      "-",
      isBig ? "<= 150 MB (peak)" : "",
      isBig && evaluate ? yesNo(a.rss.peakMB <= 150) : "",
    );
  }
  for (const a of r.agent) {
    add("RSS peak by the end of the restore", a.held, `${a.rss.peakAfterRestoreMB} MB`, "-");
  }
  for (const a of r.agent) {
    add(
      "V8 heap used idle / after load",
      a.held,
      `${a.rss.heapUsedIdleMB} / ${a.rss.heapUsedAfterLoadMB} MB`,
      "-",
    );
  }
  return out;
}

function table(rs: readonly Row[]): string {
  const header: Row = {
    metric: "metric",
    held: "held",
    kube: "kube-eip",
    base: "baseline (seed)",
    target: "target",
    met: "met",
  };
  const all = [header, ...rs];
  const keys = ["metric", "held", "kube", "base", "target", "met"] as const;
  const width = Object.fromEntries(
    keys.map((k) => [k, Math.max(...all.map((r) => r[k].length))]),
  ) as Record<(typeof keys)[number], number>;
  const line = (r: Row) =>
    keys
      .map((k) => (k === "held" ? r[k].padStart(width[k]) : r[k].padEnd(width[k])))
      .join("  ")
      .trimEnd();
  const rule = keys.map((k) => "-".repeat(width[k])).join("  ");
  return [line(header), rule, ...rs.map(line)].join("\n");
}

function profileText(p: ProfileSummary, mode: IptablesMode): string {
  const fmt = (rec: Record<string, number>) =>
    Object.entries(rec)
      .map(([k, v]) => `    ${k.padEnd(58)} ${round(v, 2)} ms`)
      .join("\n");
  return [
    `where the time goes at ${p.held} held (iptables-${mode}; the agent's own managers in node ${AGENT_NODE},`,
    `median of ${p.iterations}; starting any process there costs ${p.spawnFloorMs} ms):`,
    "  one bind (save state, plan, then each subsystem's batch, timed one after the other;",
    "  the agent overlaps the three batches once its sets and chains exist):",
    fmt(p.bind),
    "  one unbind:",
    fmt(p.unbind),
    "  one full re-read with nothing to write (each restore and each periodic resync pays it):",
    fmt(p.reread),
    ...(p.coldRestore
      ? [
          "  a cold restore (re-read, then write every binding into a flushed kernel):",
          fmt(p.coldRestore),
        ]
      : []),
  ].join("\n");
}

async function main(): Promise<number> {
  const s = parseSettings(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stderr.write(
      "agent-bench needs root: it builds network namespaces and runs the real kernel tools\n",
    );
    return 2;
  }
  const started = now();
  const m = machine();
  const base = defaultPrefix().replace(/^keip-/, "keip-bench-");
  const others = listNamespaces().filter((ns) => !ns.startsWith(base)).length;
  process.stdout.write(
    `kube-eip agent benchmark${s.quick ? " (--quick: a smoke run, figures not comparable to the targets)" : ""}\n` +
      Object.entries(m)
        .map(([k, v]) => `  ${k.padEnd(9)} ${v}`)
        .join("\n") +
      `\n  other network namespaces on this host at start: ${others}\n` +
      `  agent: --eip-cidr ${EIP_CIDR} --gateway-ip ${GATEWAY_IP} --gateway-dev ${GATEWAY_DEV} --internal-net ${INTERNAL_NET} --resync-interval ${s.resyncIntervalSec} --log-level info, state on ${os.tmpdir()} (fsync'd)\n` +
      `  held ${s.agentHeld.join("/")} (baseline ${s.baseHeld.join("/")}); ${s.seqSamples} sequential binds+unbinds (baseline ${s.baseSeqSamples}); ${s.concBinds} binds from ${s.concurrency} clients (baseline ${s.baseConcBinds})\n\n`,
  );
  const results: BackendResult[] = [];
  for (const [i, mode] of s.backends.entries()) {
    results.push(await benchBackend(mode, s, `${base}${i}`));
  }
  const wallSec = round((now() - started) / 1000);
  for (const r of results) {
    process.stdout.write(`\n== iptables-${r.mode} (lab ${r.labPrefix}, ${r.wallSec} s) ==\n`);
    if (r.error) process.stdout.write(`FAILED: ${r.error}\n`);
    process.stdout.write(table(rows(r, s)) + "\n");
    const profiled = r.agent.filter((a) => a.profile !== undefined);
    const last = profiled[profiled.length - 1]?.profile;
    if (last) process.stdout.write("\n" + profileText(last, r.mode) + "\n");
  }
  const left = listNamespaces().filter((ns) => ns.startsWith(base));
  process.stdout.write(
    `\ntotal ${wallSec} s; load average now ${os
      .loadavg()
      .map((x) => round(x, 2))
      .join(" ")}; ` + `lab namespaces left: ${left.length === 0 ? "none" : left.join(", ")}\n`,
  );
  if (s.jsonFile) {
    writeFileSync(
      s.jsonFile,
      JSON.stringify({ machine: m, settings: s, wallSec, results }, null, 2) + "\n",
    );
    process.stdout.write(`figures written to ${s.jsonFile}\n`);
  }
  return results.some((r) => r.error) || left.length > 0 ? 1 : 0;
}

if (process.argv[2] === "--profile-child") {
  await profileChild(process.argv.slice(3));
} else {
  process.exitCode = await main();
}
