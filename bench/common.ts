// Helpers the benchmarks share: addresses as numbers, percentiles, the machine's facts.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
import type { LabProcess } from "../src/lab/lab.js";

export function ipv4ToInt(ip: string): number {
  return ip.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
}

export function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function now(): number {
  return performance.now();
}

export function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export interface LatencyStats {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
  readonly max: number;
}

/** Nearest-rank percentiles, in ms. */
export function stats(samples: readonly number[]): LatencyStats {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const pick = (p: number) =>
    n === 0 ? NaN : (sorted[Math.max(0, Math.ceil((p / 100) * n) - 1)] ?? NaN);
  const mean = n === 0 ? NaN : sorted.reduce((a, b) => a + b, 0) / n;
  return {
    n,
    p50: round(pick(50), 2),
    p99: round(pick(99), 2),
    mean: round(mean, 2),
    max: round(sorted[n - 1] ?? NaN, 2),
  };
}

export function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? NaN)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** Facts of the machine a benchmark ran on, printed beside its figures. */
export function machine(
  extra: Record<string, [string, string[]]> = {},
): Record<string, string | number> {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  // The first line a tool prints of its version, on stdout or (BIRD) stderr.
  const version = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: "utf8" });
    if (r.error || r.status !== 0) return "unavailable";
    return (r.stdout || r.stderr).split("\n")[0]?.trim() ?? "";
  };
  return {
    nproc: os.availableParallelism(),
    model,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    iptables:
      version("iptables-nft", ["--version"]) + ", " + version("iptables-legacy", ["--version"]),
    ipset: version("ipset", ["version"]),
    iproute2: version("ip", ["-V"]),
    ...Object.fromEntries(Object.entries(extra).map(([k, [cmd, args]]) => [k, version(cmd, args)])),
    memoryMB: Math.round(os.totalmem() / 2 ** 20),
    loadavg: os
      .loadavg()
      .map((x) => round(x, 2))
      .join(" "),
  };
}

/** A field of /proc/PID/status in kB (VmRSS, VmHWM), NaN when absent. */
export function readStatusKb(pid: number, field: string): number {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return match ? Number(match[1]) : NaN;
}

/** The node process behind a spawned one (`ip netns exec` execs it: normally the same PID). */
export function nodePid(proc: LabProcess): number {
  const comm = readFileSync(`/proc/${proc.pid}/comm`, "utf8").trim();
  if (comm !== "ip") return proc.pid;
  const children = readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, "utf8").trim();
  const child = Number(children.split(/\s+/)[0]);
  if (!Number.isInteger(child) || child <= 0) throw new Error(`no node process under ${proc.pid}`);
  return child;
}

export function mb(kb: number): number {
  return round(kb / 1024);
}
