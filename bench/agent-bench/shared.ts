// What the agent benchmark's parts share: its network plan, the bindings it makes, and the
// loops that drive a phase of operations.
import { fileURLToPath } from "node:url";
import { CommandError } from "../../src/kernel/runner.js";
import { type LatencyStats, intToIpv4, ipv4ToInt, now, round, stats } from "../common.js";

export const AGENT_BIN = fileURLToPath(new URL("../../src/bin/eip_agent.js", import.meta.url));
/** The entry point, which runs the profile child when asked. */
export const SELF = fileURLToPath(new URL("../agent-bench.js", import.meta.url));

// ---- the benchmark's own network plan (not the lab's: its public /24 is far too small) ----

export const EIP_CIDR = "100.64.0.0/10";
export const EIP_PREFIX = "10";
export const GATEWAY_IP = "100.64.0.1";
export const GATEWAY_DEV = "eth1"; // the lab node's device on the public segment
export const INTERNAL_NET = "10.0.0.0/8";
export const AGENT_NODE = 1;
/** Inside node 1's namespace: scraped for the V8 heap figures. */
export const METRICS_ADDRESS = "127.0.0.1:9127";
export const BASELINE_NODE = 2;

/** Held bindings: EIPs from 100.64.1.0, VMIs from 10.200.0.1. */
export const HELD_EIP_BASE = ipv4ToInt("100.64.1.0");
export const HELD_VMI_BASE = ipv4ToInt("10.200.0.1");
/** Bindings made and removed by the measurements: never one of the held ones. */
export const PROBE_EIP_BASE = ipv4ToInt("100.65.0.0");
export const PROBE_VMI_BASE = ipv4ToInt("10.201.0.0");
/** The profile child's extra bindings. */
export const PROFILE_EIP_BASE = ipv4ToInt("100.66.0.0");
export const PROFILE_VMI_BASE = ipv4ToInt("10.202.0.0");

export interface Pair {
  readonly eip: string;
  readonly vmi: string;
}

export function heldPair(i: number): Pair {
  return { eip: intToIpv4(HELD_EIP_BASE + i), vmi: intToIpv4(HELD_VMI_BASE + i) };
}

let probeSerial = 0;
export function nextProbe(): Pair {
  const k = probeSerial++;
  return { eip: intToIpv4(PROBE_EIP_BASE + k), vmi: intToIpv4(PROBE_VMI_BASE + k) };
}

// ---- small helpers ----

export function errText(err: unknown): string {
  if (err instanceof CommandError)
    return `${err.command} ${err.args.slice(0, 6).join(" ")}: ${err.stderr.trim()}`;
  return err instanceof Error ? err.message : String(err);
}

export interface PhaseResult {
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
export async function runLoops(
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
