// NodeAddresses: which addresses the node holds for another purpose, so that a bind never
// takes over an address of someone else's (a keepalived or kube-vip VIP, a node address, a
// proxy ARP answer) and never binds a VMI address the node holds itself.
//
// What it reads: `ip -json -4 addr show` (every device) and `ip -4 -json neigh show proxy`
// (every device), in parallel; it writes nothing. Ours are the addresses RouteManager
// marks (on the gateway device, label `<dev>:eip`) and the proxy entries with our protocol
// (225) on the gateway device; everything else is someone else's.
//
// Cost: a bind is checked against a cached read no older than `maxAgeMs` (1 s). The first
// bind after that age reads again, and binds that arrive meanwhile wait for that one read,
// so a burst of binds costs one dump a second, not one per request (a node with 10,000 EIPs
// holds 10,000 addresses: its dump is the expensive part). An address someone adds within
// that second is still never taken over: RouteManager writes `address add`, which fails on
// an address that exists, and a re-read does not adopt an unmarked address (the bind then
// fails with errPhase 4 naming it).
import { ourAddressLabel, parseAddresses, parseProxies } from "../kernel/iproute-parse.js";
import type { CommandRunner } from "../kernel/runner.js";
import type { Binding } from "../model/desired.js";

export interface NodeAddressesOptions {
  readonly gatewayDev: string;
  /** The protocol of our proxy entries (ARP_ROUTE_PROTOCOL). */
  readonly protocol: number;
  /** How old a read may be when a bind is checked against it; default 1000 ms. */
  readonly maxAgeMs?: number;
  readonly now?: () => number;
}

interface Held {
  /** Address -> the devices that hold it for someone else. */
  readonly foreign: Map<string, string[]>;
  /** Address -> the devices that hold it at all (ours included). */
  readonly any: Map<string, string[]>;
  /** Proxy entries that are not ours: address -> devices. */
  readonly foreignProxies: Map<string, string[]>;
}

interface LinkJson {
  readonly ifname?: unknown;
}

function add(map: Map<string, string[]>, address: string, dev: string): void {
  const devs = map.get(address);
  if (devs === undefined) map.set(address, [dev]);
  else if (!devs.includes(dev)) devs.push(dev);
}

export class NodeAddresses {
  private held: Held | undefined;
  private readAt = 0;
  private reading: Promise<Held> | undefined;
  private readonly label: string | undefined;

  constructor(
    private readonly runner: CommandRunner,
    private readonly options: NodeAddressesOptions,
  ) {
    this.label = ourAddressLabel(options.gatewayDev);
  }

  /**
   * Why this bind must be refused, or undefined. `eipBoundHere`: the table already holds
   * the EIP (ours by record, whatever its kernel state), so only the VMI is checked.
   */
  async refusal(binding: Binding, eipBoundHere: boolean): Promise<string | undefined> {
    const held = await this.current();
    const vmiDevs = held.any.get(binding.vmi);
    if (vmiDevs !== undefined) {
      return `VMI address ${binding.vmi} is an address of this node (${vmiDevs.join(", ")})`;
    }
    if (eipBoundHere) return undefined;
    const devs = held.foreign.get(binding.eip);
    if (devs !== undefined) {
      return `EIP ${binding.eip} is held by this node on ${devs.join(", ")} and was not added by kube-eip`;
    }
    const proxyDevs = held.foreignProxies.get(binding.eip);
    if (proxyDevs !== undefined) {
      return `EIP ${binding.eip} is answered by a proxy ARP entry on ${proxyDevs.join(", ")} that kube-eip did not add`;
    }
    return undefined;
  }

  private current(): Promise<Held> {
    const now = (this.options.now ?? Date.now)();
    if (this.held !== undefined && now - this.readAt < (this.options.maxAgeMs ?? 1000)) {
      return Promise.resolve(this.held);
    }
    if (this.reading === undefined) {
      // Stamped with the time the read started: what it sees is at least that fresh.
      this.reading = this.read()
        .then((held) => {
          this.held = held;
          this.readAt = now;
          return held;
        })
        .finally(() => {
          this.reading = undefined;
        });
    }
    return this.reading;
  }

  private async read(): Promise<Held> {
    const [addr, neigh] = await Promise.all([
      this.runner.run("ip", ["-json", "-4", "addr", "show"]),
      this.runner.run("ip", ["-4", "-json", "neigh", "show", "proxy"]),
    ]);
    const held: Held = { foreign: new Map(), any: new Map(), foreignProxies: new Map() };
    const { gatewayDev, protocol } = this.options;
    const links = JSON.parse(addr.stdout.trim() || "[]") as LinkJson[];
    for (const link of links) {
      const dev = typeof link.ifname === "string" ? link.ifname : "?";
      for (const a of parseAddresses(JSON.stringify([link]))) {
        add(held.any, a.address, dev);
        const ours = dev === gatewayDev && this.label !== undefined && a.label === this.label;
        if (!ours) add(held.foreign, a.address, dev);
      }
    }
    for (const p of parseProxies(neigh.stdout)) {
      const dev = p.dev ?? "?";
      if (dev !== gatewayDev || p.protocol !== protocol) add(held.foreignProxies, p.address, dev);
    }
    return held;
  }
}
