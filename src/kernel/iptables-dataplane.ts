// The iptables dataplane as one kernel manager: our ipsets and our chains, written in the
// order that lets no packet of a binding pass un-NATed.
//
// The sets' members open the way: a VMI's packets are accepted by FORWARD, and reach our
// SNAT chain, only as a member of kube-eip-vmi; packets to an EIP reach our DNAT chain only
// as a member of kube-eip-eip (plan.ts JUMPS). A member that is in its set before the
// binding's NAT rule exists lets packets through un-NATed, and the first of them fixes its
// connection's conntrack entry without NAT for good: a VMI that arrives from another node
// with its connections (a live migration keeping its address) would send its next packet
// out as its private address, and the outside end would reset. Likewise on the way out, a
// rule deleted while its member is still in the set. So an apply writes, in this order:
// 1. the sets: created when missing, and the members that go deleted, nothing added;
// 2. our chains and jumps: the new bindings' rules added, the rules of those gone deleted;
// 3. the sets' new members.
// Until 3 a new binding's packets meet FORWARD's policy (DROP on a real node), and a
// dropped packet's conntrack entry is never kept. A write that failed stops the apply there,
// and the next apply starts again at 1, from what the kernel holds.
import type { IpsetSpec } from "../model/desired.js";
import { type IpsetSnapshot, IpsetManager } from "./ipset.js";
import { type IptablesDesired, type IptablesSnapshot, IptablesManager } from "./iptables.js";
import type { KernelManager } from "./manager.js";
import { type Missing, iptablesMissing, ipsetMissing } from "./readback-checks.js";

export interface IptablesDataplaneDesired {
  readonly ipsets: readonly IpsetSpec[];
  readonly iptables: IptablesDesired;
}

export interface IptablesDataplaneSnapshot {
  readonly ipsets: IpsetSnapshot;
  readonly iptables: IptablesSnapshot;
}

export class IptablesDataplane implements KernelManager<
  IptablesDataplaneDesired,
  IptablesDataplaneSnapshot
> {
  constructor(
    private readonly ipsets: IpsetManager,
    private readonly iptables: IptablesManager,
  ) {}

  setDesired(desired: IptablesDataplaneDesired): void {
    this.ipsets.setDesired(desired.ipsets);
    this.iptables.setDesired(desired.iptables);
  }

  async apply(options: { reread: boolean }): Promise<number> {
    const closed = await this.ipsets.apply({ ...options, additions: false });
    const rules = await this.iptables.apply(options);
    const opened = await this.ipsets.apply({ reread: false });
    return closed + rules + opened;
  }

  async read(): Promise<IptablesDataplaneSnapshot> {
    const [ipsets, iptables] = await Promise.all([this.ipsets.read(), this.iptables.read()]);
    return { ipsets, iptables };
  }

  adopt(snapshot: IptablesDataplaneSnapshot): void {
    this.ipsets.adopt(snapshot.ipsets);
    this.iptables.adopt(snapshot.iptables);
  }
}

export function iptablesDataplaneMissing(
  snapshot: IptablesDataplaneSnapshot,
  desired: IptablesDataplaneDesired,
): Missing[] {
  return [
    ...ipsetMissing(snapshot.ipsets, desired.ipsets),
    ...iptablesMissing(snapshot.iptables, desired.iptables),
  ];
}
