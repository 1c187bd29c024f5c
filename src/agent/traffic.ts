// TrafficMonitor: reads the kernel's per-EIP traffic counters in the background, every
// --traffic-interval seconds, and keeps the last read for ListBindings (which never runs a
// command) and the Prometheus counters (docs/traffic.md).
//
// What the kernel counts belongs to a binding: its counters start at zero when the binding
// is made on the node and go when it is unbound (a rebind starts again from zero). They are
// held by the kernel, so they survive an agent restart or SIGKILL. ListBindings shows them
// as they were at the last read.
//
// The Prometheus counters (kube_eip_agent_eip_{rx,tx}_{bytes,packets}_total{eip}) never go
// backwards while the agent runs: each read adds what the kernel counted since the last
// one, and a binding that is new or whose kernel counts went down (unbound and bound
// again, or a fresh counter) adds its counts since it was made. An unbound EIP's series
// stays at its total. A restarted agent starts each series at what the kernel holds, so a
// binding that lived through the restart continues without a reset; traffic that a binding
// carried between the last read and its unbind is not added (up to one interval's worth).
import type { Logger } from "pino";
import { type Clock, type Timer, realClock } from "../common/clock.js";
import type { Binding } from "../model/desired.js";
import { type TrafficCounts, type TrafficReader, ZERO_TRAFFIC } from "../kernel/traffic.js";
import type { AgentMetrics } from "./metrics.js";

interface Seen {
  readonly vmi: string;
  readonly counts: TrafficCounts;
}

const FIELDS = ["rxBytes", "txBytes", "rxPackets", "txPackets"] as const;

export class TrafficMonitor {
  private last = new Map<string, Seen>();
  private timer: Timer | undefined;
  private stopped = false;
  private reading: Promise<void> | undefined;

  constructor(
    private readonly opts: {
      readonly reader: TrafficReader;
      readonly bindings: () => readonly Binding[];
      readonly metrics: AgentMetrics;
      readonly logger: Logger;
      readonly clock?: Clock;
    },
  ) {}

  /** The counts of the binding of this EIP at the last read (zeros before the first). */
  counts(eip: string, vmi: string): TrafficCounts {
    const seen = this.last.get(eip);
    return seen !== undefined && seen.vmi === vmi ? seen.counts : ZERO_TRAFFIC;
  }

  /** Reads now, then every intervalMs until stop(). */
  start(intervalMs: number): void {
    const tick = () => {
      if (this.stopped) return;
      void this.read().finally(() => {
        if (!this.stopped) this.timer = (this.opts.clock ?? realClock).setTimer(tick, intervalMs);
      });
    };
    tick();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  /** One read; a failure is logged and counted, and the last read stays. */
  read(): Promise<void> {
    this.reading ??= this.readOnce().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async readOnce(): Promise<void> {
    const { reader, bindings, metrics, logger } = this.opts;
    const held = bindings();
    let read: Map<string, TrafficCounts>;
    try {
      read = await reader.read(held);
    } catch (err) {
      metrics.trafficReadErrors.inc();
      logger.warn({ err }, "reading the traffic counters failed");
      return;
    }
    const next = new Map<string, Seen>();
    for (const b of held) {
      const counts = read.get(b.eip);
      if (counts === undefined) continue;
      const before = this.last.get(b.eip);
      const same = before !== undefined && before.vmi === b.vmi;
      const grew = same && FIELDS.every((f) => counts[f] >= before.counts[f]);
      const labels = { eip: b.eip };
      for (const f of FIELDS) {
        const added = grew ? counts[f] - before.counts[f] : counts[f];
        metrics.eipTraffic[f].inc(labels, added);
      }
      next.set(b.eip, { vmi: b.vmi, counts });
    }
    this.last = next;
  }
}
