// The agent's read-back: what the kernel and the BGP speaker really hold for each binding,
// for ListBindings (binding-state.ts says what the conditions mean).
//
// The apply loop (dataplane.ts) reads the kernel in the background every resync interval,
// and right after every apply that changed the bindings; each read that no apply spoiled is
// handed here (found) before the loop repairs what it lacked (repaired). Each kernel
// subsystem says what its snapshot lacks (its missing(), readback-checks.ts); the items are
// attributed to the bindings they name. The BGP speaker is asked at each read-back and
// whenever a session goes up or down: its peers, and what each established one has been
// sent (its Adj-RIB-Out).
import type { Logger } from "pino";
import { type Clock, type Timer, realClock } from "../common/clock.js";
import type { Binding } from "../model/desired.js";
import { plan, type PlanConfig } from "../model/plan.js";
import type { Missing } from "../kernel/readback-checks.js";
import type { Subsystem } from "../kernel/subsystem.js";
import {
  type BgpView,
  type BindingCondition,
  type Findings,
  announcedOf,
  attribute,
  programmedOf,
} from "./binding-state.js";

/** What the apply loop tells the read-back. */
export interface ReadBackSink {
  /** A read of every subsystem no apply spoiled, and the bindings held while it ran. */
  found(snapshots: readonly unknown[], bindings: readonly Binding[]): void;
  /** The apply that followed `found` succeeded (error undefined) or failed. */
  repaired(error: string | undefined): void;
}

/** The BGP speaker as the read-back asks it. */
export interface BgpSource {
  peers(): Promise<readonly { readonly address: string; readonly state: string }[]>;
  /** The prefixes ("EIP/32") in a peer's Adj-RIB-Out. */
  adjOut(peer: string): Promise<readonly string[]>;
}

export interface ReadBackOptions {
  readonly subsystems: readonly Subsystem[];
  readonly config: PlanConfig;
  readonly bgp?: BgpSource;
  readonly logger: Logger;
  readonly clock?: Clock;
  /** After a BGP session came up, its Adj-RIB-Out is read again this much later. */
  readonly bgpSettleMs?: number;
}

export interface BindingState {
  readonly programmed: BindingCondition;
  readonly announced: BindingCondition;
  /** When the kernel was last read back for it (ISO 8601), or "" before the first read. */
  readonly readBackAt: string;
}

export class ReadBack implements ReadBackSink {
  private findings: Findings | undefined;
  private bgpView: BgpView | undefined;
  private bgpReading: Promise<void> | undefined;
  private bgpAgain = false;
  private settleTimer: Timer | undefined;
  private readonly clock: Clock;

  constructor(private readonly opts: ReadBackOptions) {
    this.clock = opts.clock ?? realClock;
  }

  found(snapshots: readonly unknown[], bindings: readonly Binding[]): void {
    const desired = plan(this.opts.config, bindings);
    const missing: Missing[] = [];
    this.opts.subsystems.forEach((s, i) => {
      if (s.missing !== undefined) missing.push(...s.missing(snapshots[i], desired));
    });
    const at = this.nowIso();
    this.findings = attribute(missing, bindings, at);
    if (missing.length > 0) {
      this.opts.logger.warn(
        { op: "readback", missing: missing.length, first: missing.slice(0, 5).map((m) => m.what) },
        "read back: the kernel lacks state of ours; rewriting it",
      );
    }
    void this.refreshBgp();
  }

  repaired(error: string | undefined): void {
    const f = this.findings;
    if (f === undefined || (f.missing.size === 0 && f.shared.length === 0)) return;
    if (error === undefined) f.repairedAt = this.nowIso();
    else f.repairError = error;
  }

  /** A BGP session went up or down: ask the speaker now, and again once an Adj-RIB-Out filled. */
  peerChanged(established: boolean): void {
    void this.refreshBgp();
    if (!established) return;
    this.settleTimer?.cancel();
    this.settleTimer = this.clock.setTimer(() => {
      this.settleTimer = undefined;
      void this.refreshBgp();
    }, this.opts.bgpSettleMs ?? 1000);
  }

  /** Asks the speaker; one question at a time, one more after it if asked meanwhile. */
  refreshBgp(): Promise<void> {
    const source = this.opts.bgp;
    if (source === undefined) return Promise.resolve();
    if (this.bgpReading !== undefined) {
      this.bgpAgain = true;
      return this.bgpReading;
    }
    this.bgpReading = (async () => {
      do {
        this.bgpAgain = false;
        this.bgpView = await readBgp(source, this.nowIso());
      } while (this.bgpAgain);
    })().finally(() => {
      this.bgpReading = undefined;
    });
    return this.bgpReading;
  }

  stop(): void {
    this.settleTimer?.cancel();
  }

  stateOf(
    b: Binding,
    state: { readonly pending: boolean; readonly lastError: string | undefined },
  ): BindingState {
    const f = this.findings;
    return {
      programmed: programmedOf(b, state, f),
      announced: announcedOf(b, f, this.opts.bgp === undefined ? "off" : this.bgpView),
      readBackAt: f?.covered.get(b.eip) === b.vmi ? f.at : "",
    };
  }

  private nowIso(): string {
    return new Date(this.clock.now()).toISOString();
  }
}

async function readBgp(source: BgpSource, at: string): Promise<BgpView> {
  try {
    const peers = await source.peers();
    const established = peers.filter((p) => p.state === "ESTABLISHED");
    const sent = new Map<string, ReadonlySet<string>>();
    await Promise.all(
      established.map(async (p) => {
        const prefixes = await source.adjOut(p.address);
        sent.set(
          p.address,
          new Set(prefixes.filter((x) => x.endsWith("/32")).map((x) => x.slice(0, -3))),
        );
      }),
    );
    return {
      at,
      peers: peers.map((p) => ({ address: p.address, state: p.state })),
      sent: new Map([...sent].sort(([a], [b]) => (a < b ? -1 : 1))),
    };
  } catch (err) {
    return { at, error: err instanceof Error ? err.message : String(err) };
  }
}
