// The EIPs that have just arrived on this node as far as ARP goes: RouteManager (iproute.ts)
// records here, after each successful write, the EIPs it began answering ARP for (an address
// added to the gateway device, or, with --arp-poisoning, a proxy entry added) and those it
// stopped answering for; the ARP announcer (src/agent/arp-announcer.ts) takes the arrivals
// after the kernel stage and sends gratuitous ARP for them. Only the write knows what the
// kernel lacked before (a restart that finds its state in place announces nothing; a repair
// of a lost address announces it), so this is the one thing the kernel hands on. An EIP that
// left again before it was taken is not handed on. Costs follow the change.
export class ArpArrivals {
  private readonly arrived = new Set<string>();

  /** The write made the node answer ARP for these EIPs. */
  add(eips: readonly string[]): void {
    for (const eip of eips) this.arrived.add(eip);
  }

  /** The write stopped the node answering ARP for these EIPs. */
  remove(eips: readonly string[]): void {
    for (const eip of eips) this.arrived.delete(eip);
  }

  /** The EIPs that arrived since the last take, in order of arrival; forgets them. */
  take(): string[] {
    const eips = [...this.arrived];
    this.arrived.clear();
    return eips;
  }
}
