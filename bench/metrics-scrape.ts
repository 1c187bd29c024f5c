// What the benchmarks read of processes: CPU seconds from /proc (a process's, the whole
// machine's) and a Prometheus /metrics text (histograms with their quantiles as
// histogram_quantile interpolates them, counters by prefix).
import { readFileSync } from "node:fs";
import { now, round } from "./common.js";

/** Linux's USER_HZ: the unit of utime and stime in /proc/PID/stat. */
const CLOCK_TICKS = 100;

/** Seconds of CPU the process and its finished children (its commands) used so far. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields.slice(11, 15).reduce((a, f) => a + Number(f), 0) / CLOCK_TICKS;
}

/** Seconds of CPU the whole machine spent busy so far (every CPU, any process). */
export function machineBusySeconds(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number);
  return (
    [user, nice, system, irq, softirq, steal].reduce<number>((a, b) => a + (b ?? 0), 0) /
    CLOCK_TICKS
  );
}

/** CPU seconds of named processes and of the whole machine, between two moments. */
export class CpuMeter {
  private readonly start: Map<string, number>;
  private readonly t0 = now();

  constructor(private readonly pids: ReadonlyMap<string, number>) {
    this.start = this.read();
  }

  /** Seconds since construction. */
  elapsed(): number {
    return round((now() - this.t0) / 1000, 1);
  }

  private read(): Map<string, number> {
    const m = new Map([...this.pids].map(([name, pid]) => [name, cpuSeconds(pid)]));
    m.set("machine", machineBusySeconds());
    return m;
  }

  /** Seconds used since construction, by name ("machine": every process). */
  used(): Record<string, number> {
    const end = this.read();
    return Object.fromEntries(
      [...end].map(([name, v]) => [name, round(v - (this.start.get(name) ?? NaN), 1)]),
    );
  }
}

// ---- /metrics ----

export interface Histogram {
  /** [upper bound in seconds, cumulative count], +Inf last. */
  readonly buckets: readonly (readonly [number, number])[];
  readonly count: number;
  readonly sum: number;
}

export interface Scrape {
  readonly histogram: Histogram;
  /** Every sample line but the histogram's: `name{labels}` -> value. */
  readonly values: ReadonlyMap<string, number>;
}

export const RECONCILE = "kube_eip_operator_reconcile_duration_seconds";
export const AGENT_APPLY = "kube_eip_agent_apply_duration_seconds";

/** A /metrics text: the histogram `name` and every other sample. */
export function parseScrape(text: string, name: string): Scrape {
  const buckets: [number, number][] = [];
  const values = new Map<string, number>();
  let count = 0;
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const m = /^(\S+?)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m?.[1] || m[3] === undefined) continue;
    const value = Number(m[3]);
    if (m[1] === `${name}_bucket`) {
      const le = /le="([^"]+)"/.exec(m[2] ?? "")?.[1] ?? "+Inf";
      buckets.push([le === "+Inf" ? Infinity : Number(le), value]);
    } else if (m[1] === `${name}_count`) count = value;
    else if (m[1] === `${name}_sum`) sum = value;
    else values.set(`${m[1]}${m[2] ?? ""}`, value);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  return { histogram: { buckets, count, sum }, values };
}

/** What happened between two scrapes. */
export function histogramDelta(later: Histogram, earlier: Histogram): Histogram {
  return {
    buckets: later.buckets.map(([le, c], k) => [le, c - (earlier.buckets[k]?.[1] ?? 0)] as const),
    count: later.count - earlier.count,
    sum: later.sum - earlier.sum,
  };
}

/** histogram_quantile: linear within the bucket the rank falls in; in ms. */
export function quantileMs(h: Histogram, q: number): number {
  if (h.count === 0) return NaN;
  const rank = q * h.count;
  let lower = 0;
  let below = 0;
  for (const [le, cumulative] of h.buckets) {
    if (cumulative >= rank) {
      if (le === Infinity) return lower * 1000; // above the last bound: its bound, as Prometheus
      const inBucket = cumulative - below;
      const fraction = inBucket === 0 ? 1 : (rank - below) / inBucket;
      return round((lower + (le - lower) * fraction) * 1000, 1);
    }
    lower = le;
    below = cumulative;
  }
  return NaN;
}

export interface HistogramFigures {
  readonly count: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly meanMs: number;
}

export function histogramFigures(h: Histogram): HistogramFigures {
  return {
    count: h.count,
    p50Ms: quantileMs(h, 0.5),
    p99Ms: quantileMs(h, 0.99),
    meanMs: h.count === 0 ? NaN : round((h.sum / h.count) * 1000, 1),
  };
}

/** Counter values whose name starts with `prefix` (`{labels} value`, ...), or "none". */
export function counters(s: Scrape, prefix: string, earlier?: Scrape): string {
  const found = [...s.values]
    .filter(([k]) => k.startsWith(prefix))
    .map(([k, v]) => `${k.slice(prefix.length)} ${v - (earlier?.values.get(k) ?? 0)}`);
  return found.length === 0 ? "none" : found.join(", ");
}
