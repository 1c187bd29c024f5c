// What a subsystem's read-back lacks of what it was asked to hold: one pure check per
// manager, over the snapshot its read() made (see KernelManager in manager.ts) and the part
// of the desired state it owns. Each missing item is one line of text naming what is
// missing, the way a user would look for it (an ipset member, a rule as iptables-save
// prints it, an nftables element, an ip rule, an address); the agent's read-back
// (src/agent/readback.ts) attributes a line to the bindings whose EIP or VMI it names, and
// a line naming none (a jump, a chain, a default route, a setting) to every binding.
// `answers` marks what makes the gateway device answer ARP for an EIP (its address, its
// proxy entry): ARP's announcement.
import type { IpsetSpec, SysctlSpec } from "../model/desired.js";
import type { RouteDesired } from "./iproute.js";
import type { IptablesDesired, IptablesSnapshot } from "./iptables.js";
import { type IpsetSnapshot, normalizeMember } from "./ipset.js";
import type { NftablesDesired, NftablesSnapshot } from "./nftables.js";
import { routeKey } from "./iproute-parse.js";
import type { RouteSnapshot } from "./iproute.js";
import type { SysctlSnapshot } from "./sysctl.js";

export interface Missing {
  readonly what: string;
  /** An item that makes the gateway device answer ARP for an EIP. */
  readonly answers?: true;
}

export function ipsetMissing(snapshot: IpsetSnapshot, desired: readonly IpsetSpec[]): Missing[] {
  const missing: Missing[] = [];
  for (const spec of desired) {
    const set = snapshot.sets.get(spec.name);
    if (set === undefined) {
      missing.push({ what: `ipset ${spec.name}` });
      continue;
    }
    for (const m of spec.members) {
      if (!set.members.has(normalizeMember(spec.type, m)))
        missing.push({ what: `ipset ${spec.name} member ${m}` });
    }
  }
  return missing;
}

export function iptablesMissing(snapshot: IptablesSnapshot, desired: IptablesDesired): Missing[] {
  const missing: Missing[] = [];
  const has = (table: string, chain: string, rule: string): boolean =>
    (snapshot.tables
      .get(table as never)
      ?.rules.get(chain)
      ?.get(rule) ?? 0) > 0;
  for (const chain of desired.chains) {
    if (snapshot.tables.get(chain.table)?.chains.has(chain.name) !== true) {
      missing.push({ what: `iptables -t ${chain.table} chain ${chain.name}` });
      continue;
    }
    for (const rule of chain.rules) {
      if (!has(chain.table, chain.name, rule))
        missing.push({ what: `iptables -t ${chain.table} -A ${chain.name} ${rule}` });
    }
  }
  for (const jump of desired.jumps) {
    if (!has(jump.table, jump.chain, jump.rule))
      missing.push({ what: `iptables -t ${jump.table} -A ${jump.chain} ${jump.rule}` });
  }
  return missing;
}

export function nftablesMissing(snapshot: NftablesSnapshot, desired: NftablesDesired): Missing[] {
  if (desired.bindings.length === 0 && desired.internalNets.length === 0) return [];
  if (!snapshot.exists) return [{ what: "nftables table ip kube_eip" }];
  const missing: Missing[] = [];
  if (!snapshot.layoutOk) missing.push({ what: "nftables table ip kube_eip: its chains and sets" });
  const { elements } = snapshot;
  const check = (set: keyof typeof elements, wanted: readonly string[]) => {
    const held = new Set(elements[set]);
    for (const e of wanted)
      if (!held.has(e)) missing.push({ what: `nftables ${set} element ${e}` });
  };
  check("internal_nets", desired.internalNets);
  check(
    "eips",
    desired.bindings.map((b) => b.eip),
  );
  check(
    "vmis",
    desired.bindings.map((b) => b.vmi),
  );
  check(
    "eip_vmi",
    desired.bindings.map((b) => `${b.eip} : ${b.vmi}`),
  );
  check(
    "vmi_eip",
    desired.bindings.map((b) => `${b.vmi} : ${b.eip}`),
  );
  return missing;
}

export function routeMissing(
  snapshot: RouteSnapshot,
  desired: RouteDesired,
  gatewayDev: string,
): Missing[] {
  const missing: Missing[] = [];
  const routes = new Set(snapshot.routes.map((r) => r.key));
  for (const route of desired.routes) {
    if (!routes.has(routeKey(route))) missing.push({ what: `route table 1001 ${routeKey(route)}` });
  }
  const rules = new Set(snapshot.rules.map((r) => r.key));
  for (const vmi of desired.ruleSources) {
    if (!rules.has(`from ${vmi}/32`)) missing.push({ what: `ip rule from ${vmi} lookup 1001` });
  }
  const addresses = new Set(
    snapshot.addresses.filter((a) => a.prefix === 32).map((a) => a.address),
  );
  for (const eip of desired.gatewayAddresses) {
    if (!addresses.has(eip))
      missing.push({ what: `address ${eip}/32 on ${gatewayDev}`, answers: true });
  }
  if (desired.arpProxy !== undefined) {
    const proxies = new Set(snapshot.proxies.map((p) => p.address));
    const hostRoutes = new Set(
      snapshot.arpRoutes.filter((r) => r.dev === desired.arpProxy?.routeDev).map((r) => r.address),
    );
    for (const eip of desired.arpProxy.eips) {
      if (!proxies.has(eip))
        missing.push({ what: `proxy ARP entry ${eip} on ${gatewayDev}`, answers: true });
      if (!hostRoutes.has(eip))
        missing.push({ what: `route ${eip} dev ${desired.arpProxy.routeDev}`, answers: true });
    }
  }
  return missing;
}

export function sysctlMissing(snapshot: SysctlSnapshot, desired: readonly SysctlSpec[]): Missing[] {
  return desired
    .filter((s) => snapshot.get(s.key) !== s.value)
    .map((s) => ({ what: `sysctl ${s.key.replaceAll("/", ".")} = ${s.value}` }));
}
