// Gratuitous ARP for EIPs that arrive on this node, in both modes: an EIP arrives when the
// agent adds its address to the gateway device (default mode) or its proxy entry (with
// --arp-poisoning): a bind, a binding moved here, a start after the kernel lost its state;
// not a restart that finds the kernel state in place, since nothing moved. Routers and hosts
// on the public segment that have a neighbour entry for the EIP update it at once instead of
// when it times out (Linux takes unsolicited ARP only for entries it has, unless
// arp_accept is set).
//
// Each announcement is an ARP request from the gateway device's MAC with the EIP as both
// sender and target address, broadcast on the gateway device, `count` times one second
// apart. iputils' arping sends only from an address the node holds, which poisoning mode
// never does, so the frames are sent by `arp-scan` (raw frames through libpcap, any sender
// address with --arpspa; it installs beside iputils-arping, while Debian's other arping
// conflicts with it). Announcements are sent in rounds: one arp-scan process per round for
// every EIP due, read from its stdin, at most one frame a millisecond (10,000 EIPs take 10 s
// a round); a round runs a second after the previous one started, or later if that one took
// longer. An EIP that leaves the node (unbind, moved away) is dropped from the rounds at
// once, so a node never goes on announcing an EIP that another node now holds. A failure is
// logged and otherwise ignored: the neighbours still learn the EIP when their entry expires.
import type { Logger } from "pino";
import type { CommandRunner } from "../kernel/runner.js";
import { type Clock, type Timer, realClock } from "../common/clock.js";

export interface GratuitousArpOptions {
  readonly device: string;
  /** Announcements per EIP, one a round. */
  readonly count: number;
  /** Time between the starts of two rounds, default 1000 ms. */
  readonly roundMs?: number;
  /** The clock of the rounds (a fake one in unit tests), default the real one. */
  readonly clock?: Clock;
}

interface Pending {
  /** Announcements still to send. */
  left: number;
  /** When the next one is due (ms, the clock's now()). */
  due: number;
}

export class GratuitousArp {
  private readonly pending = new Map<string, Pending>();
  private timer: Timer | undefined;
  private timerAt = Infinity;
  private running = false;
  private idleWaiters: (() => void)[] = [];
  private readonly clock: Clock;

  constructor(
    private readonly runner: CommandRunner,
    private readonly logger: Logger,
    private readonly opts: GratuitousArpOptions,
  ) {
    this.clock = opts.clock ?? realClock;
  }

  /**
   * Announces the EIPs `count` times from now on; returns at once. The first round starts on
   * a later turn of the event loop, so it never delays the replies of the apply that brought
   * the EIPs.
   */
  announce(eips: readonly string[]): void {
    if (this.opts.count <= 0 || eips.length === 0) return;
    const now = this.clock.now();
    for (const eip of eips) this.pending.set(eip, { left: this.opts.count, due: now });
    this.schedule();
  }

  /** Stops announcing the EIPs (they left this node). */
  withdraw(eips: readonly string[]): void {
    for (const eip of eips) this.pending.delete(eip);
    if (this.pending.size === 0 && !this.running) this.stopTimer();
  }

  /** Stops announcing every EIP not in `held`. Costs nothing while nothing is pending. */
  retain(held: readonly string[]): void {
    if (this.pending.size === 0) return;
    const keep = new Set(held);
    this.withdraw([...this.pending.keys()].filter((eip) => !keep.has(eip)));
  }

  /** EIPs with announcements still to send. */
  get size(): number {
    return this.pending.size;
  }

  /** Resolves when nothing is pending or running (for tests and shutdown). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops everything pending (the agent stops). */
  stop(): void {
    this.pending.clear();
    if (!this.running) this.stopTimer();
  }

  private isIdle(): boolean {
    return this.pending.size === 0 && !this.running && this.timer === undefined;
  }

  private stopTimer(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.isIdle()) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** Sets the timer for the earliest due EIP, unless a round is running (it reschedules). */
  private schedule(): void {
    if (this.running) return;
    let next = Infinity;
    for (const p of this.pending.values()) if (p.due < next) next = p.due;
    if (next === Infinity) {
      this.stopTimer();
      return;
    }
    if (this.timer !== undefined && this.timerAt <= next) return;
    this.timer?.cancel();
    this.timerAt = next;
    this.timer = this.clock.setTimer(() => void this.round(), next - this.clock.now());
  }

  private async round(): Promise<void> {
    this.timer = undefined;
    this.timerAt = Infinity;
    const start = this.clock.now();
    const due: string[] = [];
    for (const [eip, p] of this.pending) {
      if (p.due > start) continue;
      due.push(eip);
      p.left--;
      p.due = start + (this.opts.roundMs ?? 1000);
      if (p.left <= 0) this.pending.delete(eip);
    }
    this.running = true;
    try {
      if (due.length > 0) await this.send(due);
    } finally {
      this.running = false;
      this.schedule();
    }
  }

  private async send(eips: readonly string[]): Promise<void> {
    const { device } = this.opts;
    try {
      await this.runner.run(
        "arp-scan",
        [
          `--interface=${device}`,
          // Each frame's sender address is its target address: the EIP.
          "--arpspa=dest",
          "--retry=1",
          "--interval=1",
          "--timeout=100",
          "--quiet",
          "--plain",
          "--file=-",
        ],
        { input: eips.join("\n") + "\n" },
      );
      this.logger.debug({ eips: eips.length, device }, "gratuitous ARP sent");
    } catch (err) {
      this.logger.warn({ eips: eips.length, device, err }, "gratuitous ARP failed");
    }
  }
}
