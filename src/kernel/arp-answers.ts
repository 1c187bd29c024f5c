// ArpAnswers: RouteManager's part (iproute.ts) that owns, with --arp-poisoning, the kernel's
// ARP answers for EIPs the node does not hold.
//
// What it owns:
// - on the gateway device, the proxy neighbour entries with protocol `protocol` (225)
//   (`ip neigh replace proxy EIP dev <gatewayDev> protocol 225`: the kernel answers ARP for
//   EIP there with the device's MAC, as long as forwarding is on and the route to EIP leaves
//   through another device); an unmarked entry of a bound EIP is adopted at the first read
//   and marked in place; any other entry is never touched (a wanted EIP whose entry is
//   someone else's is a conflict: the apply fails, naming it);
// - every route of the main table with protocol `protocol` (225): the host routes
//   `EIP/32 dev <cni bridge>` that give each proxied EIP such a route.
//
// How it reads (RouteManager runs the commands): `ip -4 -json neigh show proxy dev
// <gatewayDev>` and `ip -json route show table main proto 225`. Host routes are printed
// without "/32"; we add it back.
//
// What it writes, last in RouteManager's batch: host routes (`route add`: a route of someone
// else's at that address is an error, never overwritten), proxy entries, then proxy entry
// deletions before host route deletions (so an answer never outlives its route).
//
// Belief: the proxy entries and the host routes, each in a delta tracker (delta.ts) by EIP.
import type { ArpProxySpec } from "../model/desired.js";
import { canonicalAddress } from "./canonical.js";
import { type DeltaEntry, DeltaTracker } from "./delta.js";
import { type ArpRoute, type KernelProxy, isDeviceName } from "./iproute-parse.js";
import { KernelError, Phase } from "./manager.js";
import { sameStrings } from "./snapshot.js";

/** A proxy entry, or a host route with its device (undefined: not a plain `dev D` route). */
interface ArpEntry extends DeltaEntry {
  dev: string | undefined;
}

export interface ArpBelief {
  /** Our proxy entries on the gateway device, by EIP. */
  readonly proxies: DeltaTracker<ArpEntry>;
  /** Proxy entries in the EIP network that are not ours (no protocol mark): never touched. */
  readonly foreignProxies: Set<string>;
  /** Our host routes in the main table, by EIP. */
  readonly arpRoutes: DeltaTracker<ArpEntry>;
  /** Our other main-table routes (not at a host route's identity): the next write deletes them. */
  otherArpRoutes: readonly ArpRoute[];
}

export interface ArpPlan {
  /** Batch lines, all of Phase.Address. */
  readonly lines: readonly string[];
  readonly addedProxies: readonly string[];
  readonly removedProxies: readonly string[];
  /** Updates the belief to what the kernel holds once the lines succeeded. */
  commit(): void;
}

export class ArpAnswers {
  /** Unmarked proxy entries of bound EIPs adopted at start, until a write marks them. */
  private readonly adoptedProxies = new Set<string>();

  constructor(
    private readonly options: {
      readonly gatewayDev: string;
      readonly protocol: number;
      readonly inEipNet: (address: string) => boolean;
    },
  ) {}

  /**
   * A fresh belief from what was read (never changed), keyed by the string objects of the
   * desired EIPs where they are equal (see snapshot.ts). `adopting`: the first read.
   */
  beliefOf(
    proxies: readonly KernelProxy[],
    routes: readonly ArpRoute[],
    spec: ArpProxySpec | undefined,
    adopting: boolean,
  ): ArpBelief {
    const belief: ArpBelief = {
      proxies: new DeltaTracker(),
      foreignProxies: new Set(),
      arpRoutes: new DeltaTracker(),
      otherArpRoutes: [],
    };
    const sameEip = sameStrings(spec?.eips ?? []);
    for (const { address, protocol } of proxies) {
      if (protocol === this.options.protocol) {
        const { believed } = belief.proxies;
        const order = believed.size;
        believed.set(sameEip.get(address) ?? address, {
          dev: undefined,
          seen: 0,
          pos: order,
          order,
        });
      } else if (adopting && sameEip.has(address)) {
        // An earlier version's entry of a bound EIP: marked in place by the next write.
        this.adoptedProxies.add(address);
      } else if (!this.adoptedProxies.has(address)) {
        belief.foreignProxies.add(address);
      }
    }
    const otherArpRoutes: ArpRoute[] = [];
    for (const route of routes) {
      const address = route.address;
      const { believed } = belief.arpRoutes;
      if (address === undefined || believed.has(address)) {
        otherArpRoutes.push(route);
        continue;
      }
      const order = believed.size;
      believed.set(sameEip.get(address) ?? address, { dev: route.dev, seen: 0, pos: order, order });
    }
    belief.otherArpRoutes = otherArpRoutes;
    return belief;
  }

  /**
   * The batch lines of the ARP answers (see the header for their order), with a commit that
   * updates the belief. Costs a lookup per wanted EIP held already. A wanted EIP whose proxy
   * entry is someone else's goes to `conflicts`.
   */
  plan(spec: ArpProxySpec | undefined, belief: ArpBelief, conflicts: string[]): ArpPlan {
    const { gatewayDev, protocol, inEipNet } = this.options;
    const { proxies, arpRoutes } = belief;
    const adoptedProxies = this.adoptedProxies;
    const eips = spec?.eips ?? [];
    const routeDev = spec?.routeDev ?? "";
    if (spec !== undefined && (!isDeviceName(routeDev) || routeDev === gatewayDev)) {
      throw new KernelError(Phase.Address, `invalid route device ${JSON.stringify(routeDev)}`);
    }
    const canonical = (text: string): string => {
      const address = canonicalAddress(text);
      if (address === undefined || !inEipNet(address)) {
        throw new KernelError(Phase.Address, `invalid EIP ${JSON.stringify(text)}`);
      }
      return address;
    };
    const proxyDelta = proxies.diff(eips, {
      canonical,
      refused: (address) => {
        // Someone else's answer: neither it nor the route to that address is ours to write.
        if (!belief.foreignProxies.has(address)) return false;
        conflicts.push(address);
        return true;
      },
    });
    const routeDelta = arpRoutes.diff(eips, {
      canonical,
      changed: (route) => route.dev !== routeDev,
      refused: (address) => belief.foreignProxies.has(address),
    });
    const addedProxies = proxyDelta.adds;
    const removedProxies = proxyDelta.deletes;
    const replacedRoutes = routeDelta.changes;
    const lines: string[] = [];
    const tail = `dev ${routeDev} table main proto ${protocol}`;
    for (const address of routeDelta.adds) lines.push(`route add ${address}/32 ${tail}`);
    for (const address of replacedRoutes) lines.push(`route replace ${address}/32 ${tail}`);
    for (const address of addedProxies) {
      lines.push(`neigh replace proxy ${address} dev ${gatewayDev} protocol ${protocol}`);
    }
    for (const address of removedProxies) {
      lines.push(`neigh del proxy ${address} dev ${gatewayDev}`);
    }
    for (const address of routeDelta.deletes) {
      lines.push(`route del ${address}/32 table main proto ${protocol}`);
    }
    for (const route of belief.otherArpRoutes) lines.push(route.del);
    return {
      lines,
      addedProxies,
      removedProxies,
      commit() {
        proxies.commit(proxyDelta, (_address, base) => ({ ...base, dev: undefined }));
        for (const address of addedProxies) adoptedProxies.delete(address);
        arpRoutes.commit(routeDelta, (_address, base) => ({ ...base, dev: routeDev }));
        for (const address of replacedRoutes) {
          (arpRoutes.believed.get(address) as ArpEntry).dev = routeDev;
        }
        belief.otherArpRoutes = [];
      },
    };
  }
}
