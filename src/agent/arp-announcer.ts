// The ARP announcer (the Announcer contract of src/kernel/subsystem.ts, beside BGP's): the
// node holds an EIP out to its segment by answering ARP for it, as an address on the gateway
// device or, with --arp-poisoning, a proxy entry (RouteManager writes both, iproute.ts); this
// announcer makes the neighbours learn at once, by gratuitous ARP (garp.ts), the EIPs that
// have just arrived: those the kernel stage's write began answering for (ArpArrivals,
// arp-arrivals.ts), not those a restart finds in place. Before the kernel stage it stops the
// announcements of every EIP the node no longer holds, so that a node never goes on
// announcing an EIP another node now holds. It owns no state of the kernel's, reads nothing
// and writes only frames: it reports no changes (a drift repair is the kernel's).
import type { ArpArrivals } from "../kernel/arp-arrivals.js";
import type { Announcer, AnnouncerStatus } from "../kernel/subsystem.js";
import type { GratuitousArp } from "./garp.js";

export class ArpAnnouncer implements Announcer<undefined> {
  constructor(
    private readonly garp: GratuitousArp,
    private readonly arrivals: ArpArrivals,
  ) {}

  withdraw(held: readonly string[]): Promise<number> {
    this.garp.retain(held);
    return Promise.resolve(0);
  }

  announce(): Promise<number> {
    this.garp.announce(this.arrivals.take());
    return Promise.resolve(0);
  }

  read(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  adopt(): void {}

  /** EIPs with gratuitous ARP still to send. */
  status(): AnnouncerStatus {
    return { announced: this.garp.size };
  }
}
