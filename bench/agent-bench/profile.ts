import { dirname, join } from "node:path";
import { type DesiredState } from "../../src/model/desired.js";
import { type PlanConfig, plan } from "../../src/model/plan.js";
import { BindingStore } from "../../src/agent/store.js";
import type { Change, HeldBinding } from "../../src/agent/binding-table.js";
import { kernelSubsystems } from "../../src/kernel/kernel-subsystems.js";
import { ExecRunner, type CommandRunner, type RunResult } from "../../src/kernel/runner.js";
import { Lab } from "../../src/lab/lab.js";
import { intToIpv4, median, now, round } from "../common.js";
import {
  AgentUnderTest,
  ApplyProfile,
  NamedStep,
  ProfileChildOutput,
  ProfileStep,
  ProfileSummary,
} from "./agent.js";
import { countKernel, describeCounts, holds } from "./kernel.js";
import {
  AGENT_NODE,
  EIP_CIDR,
  GATEWAY_DEV,
  GATEWAY_IP,
  INTERNAL_NET,
  PROFILE_EIP_BASE,
  PROFILE_VMI_BASE,
  SELF,
} from "./shared.js";
import { type Variant, VARIANTS, variantName } from "./settings.js";

export class TimingRunner implements CommandRunner {
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

export async function profileChild(argv: readonly string[]): Promise<void> {
  const [stateFile, workDir, variantArg, iterationsArg, kind] = argv;
  if (stateFile === undefined || workDir === undefined || iterationsArg === undefined) {
    throw new Error("--profile-child STATE_FILE WORK_DIR VARIANT ITERATIONS [warm|cold]");
  }
  const variant = VARIANTS.find((v) => variantName(v) === variantArg);
  if (variant === undefined) throw new Error(`bad variant ${String(variantArg)}`);
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
    dataplane: variant.dataplane,
    iptablesMode: variant.mode,
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

export function flattenProfile(p: ApplyProfile): Record<string, number> {
  const cmd = (s: ProfileStep) => s.commands.reduce((a, c) => a + c.ms, 0);
  return {
    "save state": p.saveMs,
    plan: p.planMs,
    ...Object.fromEntries(p.steps.map((s) => [s.name, s.ms])),
    "(of which commands)": p.steps.reduce((a, s) => a + cmd(s), 0),
    total: p.totalMs,
  };
}

export function flattenReread(p: ApplyProfile): Record<string, number> {
  const out: Record<string, number> = { "save state": p.saveMs, plan: p.planMs };
  for (const s of p.steps) {
    for (const c of s.commands) out[c.command] = (out[c.command] ?? 0) + c.ms;
  }
  for (const s of p.steps) out[`${s.name} (with parse)`] = s.ms;
  out.total = p.totalMs;
  return out;
}

export function medianRecord(records: readonly Record<string, number>[]): Record<string, number> {
  const keys = [...new Set(records.flatMap((r) => Object.keys(r)))];
  return Object.fromEntries(keys.map((k) => [k, round(median(records.map((r) => r[k] ?? 0)), 2)]));
}

export async function profileInNode(
  lab: Lab,
  agent: AgentUnderTest,
  v: Variant,
  n: number,
  iterations: number,
): Promise<ProfileSummary> {
  const workDir = lab.stateDir(`bench-profile-${variantName(v)}`);
  const { stdout } = await lab.nodeExec(AGENT_NODE, [
    process.execPath,
    SELF,
    "--profile-child",
    join(agent.stateDir, "bindings.json"),
    workDir,
    variantName(v),
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
export async function profileCold(
  lab: Lab,
  agent: AgentUnderTest,
  v: Variant,
  n: number,
): Promise<Record<string, number>> {
  const { stdout } = await lab.nodeExec(AGENT_NODE, [
    process.execPath,
    SELF,
    "--profile-child",
    join(agent.stateDir, "bindings.json"),
    lab.stateDir(`bench-profile-${variantName(v)}`),
    variantName(v),
    "0",
    "cold",
  ]);
  const out = JSON.parse(stdout) as ProfileChildOutput;
  const counts = await countKernel(lab, AGENT_NODE, v);
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
