// Gratuitous ARP for EIPs that arrive on this node, that is whose address the agent adds to
// the gateway device (a bind, a binding moved here, a start after the kernel lost its
// state; not a restart that finds the address still there, since nothing moved): routers
// and hosts on the public segment update their neighbour entry for the EIP at once instead
// of when it times out. Each EIP gets `arping -U -c N -I <gateway dev>`
// (one unsolicited ARP a second, N times), sent in the background: a request's reply never
// waits for it, and at most `concurrency` (64) arping processes run at a time, so a start
// with 10,000 EIPs announces them all within about 8 minutes at count 3. A failure is
// logged and otherwise ignored: the neighbours still learn the EIP when their entry expires.
//
// arping needs the EIP as a local address to send from, so this serves the default mode
// (EIP on the gateway device); with --arp-poisoning nothing is sent.
import type { Logger } from "pino";
import type { CommandRunner } from "../kernel/runner.js";

export interface GratuitousArpOptions {
  readonly device: string;
  /** Unsolicited ARPs per EIP, one a second. */
  readonly count: number;
  readonly concurrency?: number;
}

export class GratuitousArp {
  private readonly queue: string[] = [];
  private active = 0;
  private idleWaiters: (() => void)[] = [];
  private pending: NodeJS.Immediate | undefined;

  constructor(
    private readonly runner: CommandRunner,
    private readonly logger: Logger,
    private readonly opts: GratuitousArpOptions,
  ) {}

  /**
   * Queues the EIPs and returns at once; the processes start on a later turn of the event
   * loop, so starting them never delays the replies of the apply that brought the EIPs.
   */
  announce(eips: readonly string[]): void {
    if (this.opts.count <= 0 || eips.length === 0) return;
    for (const eip of eips) this.queue.push(eip);
    this.pending ??= setImmediate(() => {
      this.pending = undefined;
      this.pump();
    });
  }

  /** Resolves when nothing is queued or running (for tests and shutdown). */
  idle(): Promise<void> {
    if (this.active === 0 && this.queue.length === 0 && !this.pending) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    const limit = this.opts.concurrency ?? 64;
    while (this.active < limit && this.queue.length > 0) {
      const eip = this.queue.shift() as string;
      this.active++;
      this.send(eip).finally(() => {
        this.active--;
        this.pump();
        if (this.active === 0 && this.queue.length === 0) {
          for (const resolve of this.idleWaiters.splice(0)) resolve();
        }
      });
    }
  }

  private async send(eip: string): Promise<void> {
    const { device, count } = this.opts;
    try {
      await this.runner.run("arping", ["-U", "-c", String(count), "-I", device, eip]);
      this.logger.debug({ eip, device, count }, "gratuitous ARP sent");
    } catch (err) {
      this.logger.warn({ eip, device, err: (err as Error).message }, "gratuitous ARP failed");
    }
  }
}
