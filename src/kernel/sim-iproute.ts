// The routing half of SimKernel (sim-kernel.ts): a small model of what iproute2 shows and
// changes for the agent (addresses, routes, rules, proxy neighbour entries, links), strict
// about its grammar. Every object remembers whether it was there before the agent started
// ("foreign"); deleting or rewriting a foreign object is recorded as a violation, never
// refused, so the test sees it however the agent reacts to errors.
import { canonicalIpv4, formatIpv4Net, parseIpv4Net } from "../common/ipv4.js";

export interface SimAddress {
  readonly dev: string;
  readonly address: string;
  readonly prefix: number;
  /** Extra attributes as `ip` takes them ("label", "proto"). */
  readonly attrs: Readonly<Record<string, string>>;
  readonly foreign: boolean;
}

export interface SimRoute {
  /** "main" or a table number as text. */
  readonly table: string;
  readonly type: "unicast" | "throw";
  /** "default" or a canonical CIDR. */
  readonly dst: string;
  readonly gateway?: string;
  readonly dev?: string;
  readonly scope?: string;
  readonly proto?: string;
  readonly metric: number;
  readonly tos: string;
  readonly foreign: boolean;
}

export interface SimRule {
  readonly priority: number;
  /** "all" or a canonical CIDR. */
  readonly from: string;
  readonly table: string;
  readonly foreign: boolean;
}

export interface SimProxy {
  readonly dev: string;
  readonly address: string;
  readonly attrs: Readonly<Record<string, string>>;
  readonly foreign: boolean;
}

/** An error `ip` reports for one line of a batch (the line was well formed). */
export class SimError extends Error {}

/** A line `ip` could not parse: our managers must never write one. */
export class GrammarError extends SimError {}

/** Where the model reports what it saw: a violation fails the fuzzer, with its reason. */
export interface SimWatcher {
  violation(reason: string): void;
  /** An address was added to a device (to check the gateway's and node's are never added). */
  addressAdded(address: string, dev: string): void;
}

const DEV = /^[\w.:@-]{1,15}$/;
const ROUTE_KEYS = new Set(["via", "dev", "scope", "table", "proto", "protocol", "tos", "metric"]);
const ADDRESS_KEYS = new Set(["dev", "label", "proto", "protocol", "scope"]);

function cidr(text: string | undefined, what: string): string {
  const net = text === undefined ? undefined : parseIpv4Net(text);
  if (net === undefined) throw new GrammarError(`${what}: ${JSON.stringify(text)} is not a CIDR`);
  return formatIpv4Net(net);
}

function address(text: string | undefined, what: string): string {
  const a = text === undefined ? undefined : canonicalIpv4(text);
  if (a === undefined || a !== text) {
    throw new GrammarError(`${what}: ${JSON.stringify(text)} is not a canonical IPv4 address`);
  }
  return a;
}

/** `key value` pairs after the leading words, each key from `allowed`. */
function pairs(tokens: readonly string[], allowed: ReadonlySet<string>, what: string) {
  const out: Record<string, string> = {};
  for (let i = 0; i < tokens.length; i += 2) {
    const key = tokens[i] as string;
    const value = tokens[i + 1];
    if (!allowed.has(key) || value === undefined || key in out) {
      throw new GrammarError(`${what}: unexpected ${JSON.stringify(tokens.slice(i).join(" "))}`);
    }
    out[key === "protocol" ? "proto" : key] = value;
  }
  return out;
}

export class SimIproute {
  readonly links = new Set<string>();
  addresses: SimAddress[] = [];
  routes: SimRoute[] = [];
  rules: SimRule[] = [];
  proxies: SimProxy[] = [];
  /** Devices with promote_secondaries on (SimKernel's sysctls tell). */
  promoteSecondaries: (dev: string) => boolean = () => false;

  constructor(private readonly watcher: SimWatcher) {}

  /** Runs one batch line; throws SimError for an error ip would report for that line. */
  line(text: string): void {
    const tokens = text.trim().split(/ +/);
    const [object, verb, ...rest] = tokens;
    if (object === "route") this.route(verb, rest, text);
    else if (object === "rule") this.rule(verb, rest, text);
    else if (object === "address" || object === "addr") this.address(verb, rest, text);
    else if (object === "neigh") this.neigh(verb, rest, text);
    else throw new GrammarError(`ip: unknown object in ${JSON.stringify(text)}`);
  }

  private route(verb: string | undefined, rest: string[], text: string): void {
    let type: SimRoute["type"] = "unicast";
    if (rest[0] === "throw") {
      type = "throw";
      rest = rest.slice(1);
    }
    const [dstText, ...tail] = rest;
    const dst = dstText === "default" ? "default" : cidr(dstText, text);
    const o = pairs(tail, ROUTE_KEYS, text);
    if (o.dev !== undefined && !DEV.test(o.dev)) throw new GrammarError(`bad device in ${text}`);
    if (o.via !== undefined) address(o.via, text);
    const table = o.table ?? "main";
    const tos = o.tos ?? "0";
    const metric = Number(o.metric ?? "0");
    const same = (r: SimRoute) =>
      r.table === table && r.dst === dst && r.tos === tos && r.metric === metric;
    const route: SimRoute = {
      table,
      type,
      dst,
      metric,
      tos,
      foreign: false,
      ...(o.via !== undefined ? { gateway: o.via } : {}),
      ...(o.dev !== undefined ? { dev: o.dev } : {}),
      // As the kernel does: a direct unicast route (no gateway) is scope link by default.
      ...(o.scope !== undefined
        ? { scope: o.scope }
        : type === "unicast" && o.via === undefined && o.dev !== undefined
          ? { scope: "link" }
          : {}),
      ...(o.proto !== undefined ? { proto: o.proto } : {}),
    };
    if (verb === "replace" || verb === "add") {
      const i = this.routes.findIndex(same);
      const old = this.routes[i];
      if (old && verb === "add") throw new SimError("RTNETLINK answers: File exists");
      if (old?.foreign) this.watcher.violation(`replaced a foreign route: ${text}`);
      if (old) this.routes[i] = route;
      else this.routes.push(route);
      return;
    }
    if (verb !== "del") throw new GrammarError(`ip route: unknown verb in ${text}`);
    const i = this.routes.findIndex(
      (r) =>
        same(r) &&
        (o.proto === undefined || r.proto === o.proto) &&
        (o.dev === undefined || r.dev === o.dev),
    );
    const old = this.routes[i];
    if (!old) throw new SimError("RTNETLINK answers: No such process");
    if (old.foreign) this.watcher.violation(`deleted a foreign route: ${text}`);
    this.routes.splice(i, 1);
  }

  private rule(verb: string | undefined, rest: string[], text: string): void {
    const o = pairs(rest, new Set(["from", "lookup", "table", "priority", "pref"]), text);
    const from = o.from === undefined || o.from === "all" ? "all" : cidr(o.from, text);
    const table = o.lookup ?? o.table;
    const priority = Number(o.priority ?? o.pref);
    if (table === undefined || !Number.isInteger(priority)) {
      throw new GrammarError(`ip rule: table and priority expected in ${text}`);
    }
    if (verb === "add") {
      this.rules.push({ priority, from, table, foreign: false });
      return;
    }
    if (verb !== "del") throw new GrammarError(`ip rule: unknown verb in ${text}`);
    const i = this.rules.findIndex(
      (r) => r.priority === priority && r.table === table && (from === "all" || r.from === from),
    );
    const old = this.rules[i];
    if (!old) throw new SimError("RTNETLINK answers: No such file or directory");
    if (old.foreign) this.watcher.violation(`deleted a foreign rule: ${text}`);
    this.rules.splice(i, 1);
  }

  private address(verb: string | undefined, rest: string[], text: string): void {
    const [local, ...tail] = rest;
    const slash = local?.indexOf("/") ?? -1;
    const a = address(slash === -1 ? local : local?.slice(0, slash), text);
    const prefix = slash === -1 ? 32 : Number(local?.slice(slash + 1));
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) {
      throw new GrammarError(`bad prefix in ${text}`);
    }
    const o = pairs(tail, ADDRESS_KEYS, text);
    const dev = o.dev;
    if (dev === undefined || !this.links.has(dev))
      throw new SimError(`Cannot find device in ${text}`);
    delete o.dev;
    const same = (x: SimAddress) => x.dev === dev && x.address === a && x.prefix === prefix;
    const i = this.addresses.findIndex(same);
    const old = this.addresses[i];
    if (verb === "add" || verb === "replace") {
      if (old && verb === "add") throw new SimError("RTNETLINK answers: File exists");
      if (old?.foreign) this.watcher.violation(`rewrote a foreign address: ${text}`);
      const entry = { dev, address: a, prefix, attrs: o, foreign: false };
      if (old) this.addresses[i] = entry;
      else this.addresses.push(entry);
      this.watcher.addressAdded(a, dev);
      return;
    }
    if (verb !== "del") throw new GrammarError(`ip address: unknown verb in ${text}`);
    if (!old) throw new SimError("RTNETLINK answers: Cannot assign requested address");
    this.removeAddress(old, text);
  }

  /** The kernel's rule: deleting a primary takes its secondaries unless they are promoted. */
  private removeAddress(old: SimAddress, text: string): void {
    const wasPrimary = !this.isSecondary(old);
    this.addresses = this.addresses.filter((x) => x !== old);
    if (old.foreign) this.watcher.violation(`deleted a foreign address: ${text}`);
    if (!wasPrimary || this.promoteSecondaries(old.dev)) return;
    const net = subnet(old);
    for (const x of [...this.addresses]) {
      if (x.dev !== old.dev || x.prefix !== old.prefix || subnet(x) !== net) continue;
      this.addresses = this.addresses.filter((y) => y !== x);
      if (x.foreign) {
        this.watcher.violation(
          `deleting ${old.address}/${old.prefix} took the secondary ${x.address}`,
        );
      }
    }
  }

  isSecondary(a: SimAddress): boolean {
    const net = subnet(a);
    for (const x of this.addresses) {
      if (x === a) return false;
      if (x.dev === a.dev && x.prefix === a.prefix && subnet(x) === net) return true;
    }
    return false;
  }

  private neigh(verb: string | undefined, rest: string[], text: string): void {
    if (rest[0] !== "proxy")
      throw new GrammarError(`ip neigh: only proxy entries expected: ${text}`);
    const a = address(rest[1], text);
    const o = pairs(rest.slice(2), new Set(["dev", "protocol", "proto"]), text);
    const dev = o.dev;
    if (dev === undefined || !this.links.has(dev))
      throw new SimError(`Cannot find device in ${text}`);
    delete o.dev;
    const i = this.proxies.findIndex((p) => p.dev === dev && p.address === a);
    const old = this.proxies[i];
    if (verb === "add" || verb === "replace") {
      if (old && verb === "add") throw new SimError("RTNETLINK answers: File exists");
      if (old?.foreign) this.watcher.violation(`rewrote a foreign proxy entry: ${text}`);
      const entry = { dev, address: a, attrs: o, foreign: false };
      if (old) this.proxies[i] = entry;
      else this.proxies.push(entry);
      return;
    }
    if (verb !== "del") throw new GrammarError(`ip neigh: unknown verb in ${text}`);
    if (!old) throw new SimError("RTNETLINK answers: No such file or directory");
    if (old.foreign) this.watcher.violation(`deleted a foreign proxy entry: ${text}`);
    this.proxies.splice(i, 1);
  }

  /** `ip -json addr show [dev D]`. */
  showAddresses(dev: string | undefined): string {
    const devs = dev === undefined ? [...this.links] : [dev];
    if (dev !== undefined && !this.links.has(dev))
      throw new SimError(`Device "${dev}" does not exist.`);
    return JSON.stringify(
      devs.map((d, i) => ({
        ifindex: i + 1,
        ifname: d,
        addr_info: this.addresses
          .filter((a) => a.dev === d)
          .map((a) => ({
            family: "inet",
            local: a.address,
            prefixlen: a.prefix,
            ...(this.isSecondary(a) ? { secondary: true } : {}),
            label: a.attrs.label ?? d,
            ...(a.attrs.proto !== undefined ? { protocol: a.attrs.proto } : {}),
          })),
      })),
    );
  }

  /** `ip -json route show table T [proto P]` (with a proto filter, ip leaves it out). */
  showRoutes(table: string, proto: string | undefined): string {
    if (table !== "main" && !this.routes.some((r) => r.table === table)) {
      throw new SimError("Error: ipv4: FIB table does not exist.");
    }
    const shown = this.routes.filter(
      (r) => r.table === table && (proto === undefined || r.proto === proto),
    );
    return JSON.stringify(
      shown.map((r) => ({
        ...(r.type === "throw" ? { type: "throw" } : {}),
        dst: r.dst.endsWith("/32") ? r.dst.slice(0, -3) : r.dst,
        ...(r.gateway !== undefined ? { gateway: r.gateway } : {}),
        ...(r.dev !== undefined ? { dev: r.dev } : {}),
        ...(r.proto !== undefined && proto === undefined ? { protocol: r.proto } : {}),
        ...(r.scope !== undefined ? { scope: r.scope } : {}),
        ...(r.metric !== 0 ? { metric: r.metric } : {}),
        flags: [],
      })),
    );
  }

  /** `ip -json -N rule show`. */
  showRules(): string {
    const sorted = [...this.rules].sort((a, b) => a.priority - b.priority);
    return JSON.stringify(
      sorted.map((r) => {
        const [src, len] = r.from.split("/");
        return {
          priority: r.priority,
          src: r.from === "all" ? "all" : src,
          ...(len !== undefined && len !== "32" ? { srclen: Number(len) } : {}),
          table: r.table,
        };
      }),
    );
  }

  /** `ip -json neigh show proxy [dev D]`. */
  showProxies(dev: string | undefined): string {
    return JSON.stringify(
      this.proxies
        .filter((p) => dev === undefined || p.dev === dev)
        .map((p) => ({
          dst: p.address,
          ...(dev === undefined ? { dev: p.dev } : {}),
          flags: ["proxy"],
          ...(p.attrs.proto !== undefined ? { protocol: p.attrs.proto } : {}),
        })),
    );
  }
}

function subnet(a: SimAddress): string {
  const net = parseIpv4Net(`${a.address}/${a.prefix}`, { allowHostBits: true });
  return net === undefined ? a.address : formatIpv4Net(net);
}
