// Forgets the connection tracking of EIPs that leave the node or change VMI. A flow through
// an EIP carries its NAT in its conntrack entry: without this, a flow that passed this node
// before keeps being DNATed to the VMI's old address (or SNATed to an EIP the VMI no longer
// holds) for as long as it goes on, even after the binding came back with another address.
// Runs after the NAT rules are gone, so no new packet re-creates an old entry; kube-proxy
// does the same for its endpoints. The deletions run in the background, one sync's after
// the other's, so an unbind's reply never waits for them (deleting a fresh entry of a
// binding made meanwhile is harmless: its next packet is tracked, and NATed, anew).
import type { Logger } from "pino";
import { CommandError, type CommandRunner } from "./runner.js";

export interface EipPair {
  readonly eip: string;
  readonly vmi: string;
}

/** conntrack -D runs at once at the most. */
const CONCURRENCY = 8;

export class ConntrackCleaner {
  /** EIP -> VMI as of the last sync; undefined before the first. */
  private previous: Map<string, string> | undefined;
  private work: Promise<void> = Promise.resolve();

  constructor(
    private readonly runner: CommandRunner,
    private readonly logger: Logger,
  ) {}

  /**
   * Starts deleting the entries of every EIP bound before, and now unbound or bound
   * otherwise; resolves to how many EIPs that is, without waiting for the deletions.
   */
  sync(bound: readonly EipPair[]): Promise<number> {
    const now = new Map(bound.map((b) => [b.eip, b.vmi]));
    const before = this.previous;
    this.previous = now;
    if (!before) return Promise.resolve(0);
    const gone = [...before].filter(([eip, vmi]) => now.get(eip) !== vmi).map(([eip]) => eip);
    if (gone.length > 0) this.work = this.work.then(() => this.forget(gone));
    return Promise.resolve(gone.length);
  }

  /** Resolves once every deletion started so far is done. */
  idle(): Promise<void> {
    return this.work;
  }

  private async forget(gone: readonly string[]): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < gone.length) {
        const eip = gone[next++] as string;
        // DNATed flows to the EIP, and SNATed flows whose replies come back to it.
        for (const filter of ["--orig-dst", "--reply-dst"]) await this.delete(filter, eip);
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, gone.length) }, worker));
  }

  private async delete(filter: string, eip: string): Promise<void> {
    try {
      await this.runner.run("conntrack", ["-D", filter, eip]);
    } catch (err) {
      // Exit 1 with "0 flow entries have been deleted" is the common case: nothing to forget.
      if (err instanceof CommandError && /0 flow entries/.test(err.stderr)) return;
      this.logger.warn(
        { eip, filter, err },
        "forgetting an EIP's connection tracking failed; its old flows keep their NAT until they end",
      );
    }
  }
}

/** Lets conntrack take up a TCP flow in the middle, after its entry was lost (--proc-sys form). */
export const TCP_LOOSE_SYSCTL = "net/netfilter/nf_conntrack_tcp_loose";

/**
 * Warns when nf_conntrack_tcp_loose is 0. Then a packet in the middle of a TCP flow whose
 * conntrack entry is gone (`conntrack -F`, a full table, an entry that timed out) is
 * INVALID: it is not NATed, so an inbound one meets the node's own EIP address and the
 * node answers with a reset (docs/connections.md). Not read (no conntrack in the kernel
 * yet, say): nothing is said beyond debug.
 */
export async function checkTcpLoose(
  sysctl: { read(keys: readonly string[]): Promise<string[]> },
  logger: Logger,
): Promise<void> {
  let value: string | undefined;
  try {
    [value] = await sysctl.read([TCP_LOOSE_SYSCTL]);
  } catch (err) {
    logger.debug({ err, sysctl: TCP_LOOSE_SYSCTL }, "cannot read nf_conntrack_tcp_loose");
    return;
  }
  if (value === "0") {
    logger.warn(
      { sysctl: TCP_LOOSE_SYSCTL, value },
      "nf_conntrack_tcp_loose is 0: a TCP flow through an EIP whose conntrack entry is lost (conntrack -F, a full table) is reset instead of taken up again; set it to 1 (the kernel's default)",
    );
  }
}
