// The one contract between the apply loop (src/agent/dataplane.ts) and every subsystem it
// drives: the kernel managers, the announcers (BGP, ARP), the conntrack cleaner. A subsystem says
// what it owns, its stage, and, by its place in the list, its order within the stage:
// - "kernel": written after the announcers withdrew; in list order until the loop knows our
//   sets and chains exist (the new dataplane before the old one goes), at once afterwards; a
//   failure fails the apply with its phase;
// - "announce": withdraw() before the kernel stage, sync() after it, so that a route never
//   points at an EIP the node no longer serves, nor at one it does not serve yet;
// - "after": sync() after the kernel stage (conntrack: forgets the flows of a binding once
//   its NAT is gone).
// Both later stages run in list order; their failures fail the apply once the kernel stage
// has been written.
//
// An announcer (the Announcer contract below) tells the network which EIPs this node holds:
// BGP paths to the routers (src/bgp/announcer.ts), gratuitous ARP to the segment
// (src/agent/arp-announcer.ts). announcing() makes one an "announce" subsystem.
import type { DesiredState } from "../model/desired.js";
import type { KernelManager } from "./manager.js";
import type { Missing } from "./readback-checks.js";

export type Stage = "kernel" | "announce" | "after";

export interface Subsystem {
  readonly name: string;
  /** What it owns, in a few words (see the header of its file). */
  readonly owns: string;
  readonly stage: Stage;
  /**
   * A "kernel" subsystem whose state lets a binding's traffic reach the node (an EIP's
   * address, which the node answers ARP for and delivers to itself): the loop writes it
   * after the others, and first, when bindings went, with the bindings that stay, so that no
   * packet finds an EIP here without its NAT (dataplane.ts).
   */
  readonly gate?: true;
  /** The "announce" stage only: withdraws what `desired` no longer holds. */
  withdraw?(desired: DesiredState, options: { reread: boolean }): Promise<number>;
  /** Writes what differs from `desired`; resolves to the number of changes written. */
  sync(desired: DesiredState, options: { reread: boolean }): Promise<number>;
  /** Reads what it owns as it is now, leaving its belief alone. */
  read(): Promise<unknown>;
  /** Takes a snapshot from read() as the belief the next sync diffs against. */
  adopt(snapshot: unknown): void;
  /**
   * What a snapshot from read() lacks of `desired` (readback-checks.ts); absent for a
   * subsystem whose read-back proves nothing a binding needs.
   */
  missing?(snapshot: unknown, desired: DesiredState): readonly Missing[];
}

/** A kernel manager as the apply loop sees it: its part of the desired state, its snapshots. */
export function managed<D, S>(
  name: string,
  owns: string,
  manager: KernelManager<D, S>,
  select: (desired: DesiredState) => D,
  missing?: (snapshot: S, desired: D) => readonly Missing[],
): Subsystem {
  return {
    name,
    owns,
    stage: "kernel",
    ...(missing ? { missing: (snapshot, desired) => missing(snapshot as S, select(desired)) } : {}),
    sync: (desired, options) => {
      manager.setDesired(select(desired));
      return manager.apply(options);
    },
    read: () => manager.read(),
    // The loop hands each subsystem back only the snapshot its own read() produced.
    adopt: (snapshot) => manager.adopt(snapshot as S),
  };
}

/** The EIPs an announcer holds out to the network, and how it fares. */
export interface AnnouncerStatus {
  /** EIPs announced now, as far as the announcer knows. */
  readonly announced: number;
}

/**
 * Tells the network which EIPs the node holds. The apply loop calls withdraw() before the
 * kernel stops serving what went, announce() after it serves what came, both with the whole
 * set the node holds (the announcer sends only the difference from what it believes).
 */
export interface Announcer<S = unknown> {
  /** Stops announcing what `held` no longer holds; resolves to the changes sent. */
  withdraw(held: readonly string[], options: { reread: boolean }): Promise<number>;
  /** Announces `held`; resolves to the changes sent. */
  announce(held: readonly string[], options: { reread: boolean }): Promise<number>;
  /** Reads what is announced now, leaving the belief alone. */
  read(): Promise<S>;
  /** Takes a snapshot from read() as the belief. */
  adopt(snapshot: S): void;
  status(): AnnouncerStatus;
}

/** An announcer as the apply loop sees it: the EIPs it announces of the desired state. */
export function announcing<S>(
  name: string,
  owns: string,
  announcer: Announcer<S>,
  select: (desired: DesiredState) => readonly string[],
): Subsystem {
  return {
    name,
    owns,
    stage: "announce",
    withdraw: (desired, options) => announcer.withdraw(select(desired), options),
    sync: (desired, options) => announcer.announce(select(desired), options),
    read: () => announcer.read(),
    // The loop hands each subsystem back only the snapshot its own read() produced.
    adopt: (snapshot) => announcer.adopt(snapshot as S),
  };
}
