import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { AgentClient, type EipOpRsp } from "../../src/common/agent-api.js";
import { Lab, type LabProcess } from "../../src/lab/lab.js";
import {
  type LatencyStats,
  mb,
  nodePid,
  now,
  readStatusKb,
  round,
  sleep,
  stats,
} from "../common.js";
import {
  KernelCounts,
  countKernel,
  describeCounts,
  flushKernel,
  holds,
  isRecord,
} from "./kernel.js";
import { profileCold, profileInNode } from "./profile.js";
import { Settings } from "./settings.js";
import {
  AGENT_BIN,
  AGENT_NODE,
  EIP_CIDR,
  GATEWAY_DEV,
  GATEWAY_IP,
  INTERNAL_NET,
  METRICS_ADDRESS,
  Pair,
  PhaseResult,
  errText,
  heldPair,
  nextProbe,
  runLoops,
} from "./shared.js";
import { type Variant, variantName } from "./settings.js";
import { type TrafficResult, type TrafficVmis, measureTraffic, trafficVmis } from "./traffic.js";

export interface RestoreResult {
  readonly bindings: number;
  /** The EIPs as proxy entries (--arp-poisoning) instead of addresses. */
  readonly arpPoisoning: boolean;
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

export interface Rss {
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

export interface ProfileStep {
  readonly ms: number;
  readonly commands: readonly {
    readonly command: string;
    readonly ms: number;
    readonly lines: number;
  }[];
}

export interface ApplyProfile {
  readonly saveMs: number;
  readonly planMs: number;
  /** Each kernel subsystem's sync, in the agent's order (ipset, iptables, iproute, sysctl). */
  readonly steps: readonly NamedStep[];
  readonly totalMs: number;
}

export interface NamedStep extends ProfileStep {
  readonly name: string;
}

export interface ProfileChildOutput {
  readonly held: number;
  readonly spawnFloorMs: number;
  readonly reread: ApplyProfile;
  readonly binds: readonly ApplyProfile[];
  readonly unbinds: readonly ApplyProfile[];
}

export interface ProfileSummary {
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

export interface AgentLevel {
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
  /** At the largest level: a restore into a flushed kernel with --arp-poisoning. */
  readonly arpRestore: RestoreResult | undefined;
  /** At the largest level: connection rate and throughput through the first and last EIP. */
  readonly traffic: TrafficResult | undefined;
}

export interface LogLine {
  readonly msg: string;
  readonly time: number;
}

export function logLines(proc: LabProcess): LogLine[] {
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

export class AgentUnderTest {
  proc: LabProcess | undefined;
  private serial = 0;
  /** Whether the next start() runs with --arp-poisoning. */
  arpPoisoning = false;
  readonly stateDir: string;
  readonly socket: string;
  readonly ns: string;

  constructor(
    private readonly lab: Lab,
    private readonly variant: Variant,
    private readonly settings: Settings,
  ) {
    this.stateDir = lab.stateDir("bench-agent");
    this.socket = join(this.stateDir, "agent.sock");
    this.ns = lab.nodeNamespace(AGENT_NODE);
  }

  args(): string[] {
    return [
      "--iptables-mode",
      this.variant.mode,
      "--dataplane",
      this.variant.dataplane,
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
      ...(this.arpPoisoning ? ["--arp-poisoning"] : []),
    ];
  }

  /** The held bindings: the first and the last lead to the traffic VMIs when given. */
  heldPairs(n: number, vmis?: TrafficVmis): Pair[] {
    const pairs = Array.from({ length: n }, (_, i) => heldPair(i));
    if (vmis && n >= 2) {
      pairs[0] = { eip: heldPair(0).eip, vmi: vmis.first.address };
      pairs[n - 1] = { eip: heldPair(n - 1).eip, vmi: vmis.last.address };
    }
    return pairs;
  }

  writeState(pairs: readonly Pair[]): void {
    const since = new Date().toISOString();
    const bindings = pairs.map((p) => ({ ...p, since }));
    writeFileSync(join(this.stateDir, "bindings.json"), JSON.stringify({ version: 1, bindings }));
  }

  /** Starts the agent and measures its restore of `n` bindings (already in its state file). */
  async start(n: number, flushed: boolean): Promise<RestoreResult> {
    const arp = this.arpPoisoning;
    const t0 = Date.now();
    const proc = await this.lab.spawnIn(this.ns, [process.execPath, AGENT_BIN, ...this.args()], {
      name: `agent-${variantName(this.variant)}-${++this.serial}`,
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
    const counts = await countKernel(this.lab, AGENT_NODE, this.variant);
    return {
      bindings: n,
      arpPoisoning: arp,
      flushed,
      spawnToRestoredMs: restored - t0,
      restoreProperMs: restoring === undefined ? NaN : restored - restoring,
      spawnToServingMs: serving === undefined ? NaN : serving - t0,
      verified: holds(counts, n, true, arp),
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

export async function operate(
  client: AgentClient,
  action: "bind" | "unbind",
  p: Pair,
): Promise<string | undefined> {
  const rsp: EipOpRsp = await client.eipOperate({ action, eipAddr: p.eip, vmiAddr: p.vmi });
  return rsp.result === "Succeed" ? undefined : `${action} ${p.eip}->${p.vmi}: ${rsp.reason}`;
}

export async function agentLevel(
  lab: Lab,
  agent: AgentUnderTest,
  mode: Variant,
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
  const big = n >= 2 && n === Math.max(...s.agentHeld);
  const vmis = big ? await trafficVmis(lab) : undefined;
  const held = agent.heldPairs(n, vmis);
  agent.writeState(held);
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
    // A capped unbind phase leaves some bound: unbind them (untimed), so N are held again.
    const left = pairs.slice(concUnbind.issued, concBind.issued);
    await runLoops(left.length, s.concurrency, Infinity, (k, w) =>
      operate(clients[w] as AgentClient, "unbind", left[k] as Pair),
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

    const traffic = vmis
      ? await measureTraffic(lab, mode, vmis, n, held[0] as Pair, held[n - 1] as Pair, s, log)
      : undefined;

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
    // And with the EIPs as proxy entries (--arp-poisoning), into a flushed kernel again; the
    // next level's flush removes them.
    let arpRestore: RestoreResult | undefined;
    if (big) {
      await agent.kill();
      await flushKernel(lab, AGENT_NODE, mode);
      agent.arpPoisoning = true;
      try {
        arpRestore = await agent.start(n, true);
      } finally {
        agent.arpPoisoning = false;
      }
      log(
        `  restore of ${n} into a flushed kernel with --arp-poisoning: ${arpRestore.spawnToRestoredMs} ms from spawn` +
          ` (${arpRestore.restoreProperMs} ms in the agent), kernel ${arpRestore.verified ? "verified" : `WRONG: ${describeCounts(arpRestore.counts)}`}`,
      );
    }
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
      arpRestore,
      traffic,
    };
  } finally {
    client.close();
    for (const c of clients) c.close();
  }
}

/** The V8 heap in use, from the agent's own metrics endpoint (scraped inside node 1). */
export async function heapUsedMB(lab: Lab): Promise<number> {
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
