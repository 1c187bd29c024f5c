// Parsers of `ip -json` output for RouteManager (iproute.ts), and the batch lines that name
// what they parsed: routes of table 1001, our ip rules, the gateway device's addresses, its
// proxy neighbour entries and our main-table host routes. Pure: no I/O.
import { ROUTE_TABLE_NAME, type RouteSpec } from "../model/desired.js";
import { canonicalIpv4, formatIpv4Net, parseIpv4Net } from "../common/ipv4.js";

/** A route of our table as the kernel holds it. */
export interface KernelRoute {
  /** What the kernel tells routes of one table apart by: "dst tos T metric M". */
  readonly identity: string;
  /** Comparable with routeKey(desired): "via default 192.168.18.1 eth1", "throw 10.0.0.0/8". */
  readonly key: string;
  /** The batch line that deletes it. */
  readonly del: string;
}

/** One of our ip rules as the kernel holds it. */
export interface KernelRule {
  /** "from 10.0.0.1/32" for a rule with no other selector; anything else is unique. */
  readonly key: string;
  /** True when `del` names every selector the rule has (so it deletes exactly this rule). */
  readonly exact: boolean;
  readonly del: string;
}

export interface KernelAddress {
  readonly address: string;
  readonly prefix: number;
  readonly secondary: boolean;
  /** The address's label (`ip addr add ... label eth1:eip`); ip shows the device name by default. */
  readonly label?: string;
}

type JsonObject = Record<string, unknown>;

function parseJsonArray(text: string, what: string): JsonObject[] {
  const trimmed = text.trim();
  if (trimmed === "") return [];
  const value: unknown = JSON.parse(trimmed);
  if (!Array.isArray(value)) throw new Error(`${what}: expected a JSON array`);
  return value.filter((v): v is JsonObject => typeof v === "object" && v !== null);
}

function str(obj: JsonObject, key: string): string | undefined {
  const v = obj[key];
  return typeof v === "string" ? v : typeof v === "number" ? String(v) : undefined;
}

/** "default" or a canonical CIDR; other text comes back unchanged. */
export function canonicalDst(dst: string): string {
  if (dst === "default" || dst === "0.0.0.0/0") return "default";
  const net = parseIpv4Net(dst);
  return net === undefined ? dst : formatIpv4Net(net);
}

/** The comparison key of a desired route (see KernelRoute.key). */
export function routeKey(route: RouteSpec): string {
  const dst = canonicalDst(route.dst);
  switch (route.kind) {
    case "via":
      return `via ${dst} ${canonicalIpv4(route.gateway) ?? route.gateway} ${route.dev}`;
    case "link":
      return `link ${dst} ${route.dev}`;
    case "throw":
      return `throw ${dst}`;
  }
}

export function routeReplaceLine(route: RouteSpec, table: number): string {
  const dst = canonicalDst(route.dst);
  switch (route.kind) {
    case "via":
      return `route replace ${dst} via ${route.gateway} dev ${route.dev} table ${table}`;
    case "link":
      return `route replace ${dst} dev ${route.dev} scope link table ${table}`;
    case "throw":
      return `route replace throw ${dst} table ${table}`;
  }
}

export function identityOf(dst: string, tos: string, metric: number): string {
  return `${dst} tos ${tos} metric ${metric}`;
}

export function routeDelLine(
  dst: string,
  tos: string,
  metric: number,
  table: number | "main",
): string {
  let line = `route del ${dst} table ${table}`;
  if (tos !== "0") line += ` tos ${tos}`;
  if (metric !== 0) line += ` metric ${metric}`;
  return line;
}

/** Parses `ip -json route show table N`. */
export function parseRoutes(json: string, table: number): KernelRoute[] {
  const routes: KernelRoute[] = [];
  for (const r of parseJsonArray(json, "ip route")) {
    const rawDst = str(r, "dst");
    if (rawDst === undefined) continue;
    const dst = canonicalDst(rawDst);
    const type = str(r, "type") ?? "unicast";
    const tosText = str(r, "tos") ?? str(r, "dsfield") ?? "0";
    const tos = tosText === "0x00" || tosText === "0x0" ? "0" : tosText;
    const metric = Number(str(r, "metric") ?? "0") || 0;
    const gateway = str(r, "gateway");
    const dev = str(r, "dev");
    let key: string;
    if (type === "throw") {
      key = `throw ${dst}`;
    } else if (type === "unicast" && r.nexthops === undefined && gateway !== undefined && dev) {
      key = `via ${dst} ${gateway} ${dev}`;
    } else if (
      type === "unicast" &&
      r.nexthops === undefined &&
      dev &&
      str(r, "scope") === "link"
    ) {
      key = `link ${dst} ${dev}`;
    } else {
      key = `other ${JSON.stringify(r)}`;
    }
    if (tos !== "0" || metric !== 0) key += ` tos ${tos} metric ${metric}`;
    routes.push({
      identity: identityOf(dst, tos, metric),
      key,
      del: routeDelLine(dst, tos, metric, table),
    });
  }
  return routes;
}

/** Rule attributes that do not select packets: a rule with only these is "from X lookup T". */
const PLAIN_RULE_KEYS = new Set(["priority", "src", "srclen", "table", "protocol"]);

function ruleFrom(src: string | undefined, len: string | undefined): string {
  if (src === undefined || src === "all") return "all";
  const net = parseIpv4Net(`${src}/${len ?? "32"}`, { allowHostBits: true });
  return net === undefined ? `${src}/${len ?? "32"}` : formatIpv4Net(net);
}

/**
 * Parses `ip -json [-N] rule show`, keeping only our rules: priority `priority`, table
 * `table` (or `tableName`).
 */
export function parseRules(
  json: string,
  options: { table: number; priority: number; tableName?: string },
): KernelRule[] {
  const tableName = options.tableName ?? ROUTE_TABLE_NAME;
  const rules: KernelRule[] = [];
  for (const r of parseJsonArray(json, "ip rule")) {
    if (str(r, "priority") !== String(options.priority)) continue;
    const table = str(r, "table");
    if (table !== String(options.table) && table !== tableName) continue;
    const from = ruleFrom(str(r, "src"), str(r, "srclen"));
    const plain = Object.keys(r).every((k) => PLAIN_RULE_KEYS.has(k));
    const tail = `lookup ${options.table} priority ${options.priority}`;
    if (plain) {
      // `from all` is a wildcard for `ip rule del`: it could hit any of our rules.
      rules.push({
        key: `from ${from}`,
        exact: from !== "all",
        del: `rule del from ${from} ${tail}`,
      });
      continue;
    }
    const parts = ["rule del"];
    let exact = true;
    for (const k of Object.keys(r)) {
      if (!PLAIN_RULE_KEYS.has(k) && !RULE_SELECTORS.has(k)) exact = false;
    }
    if ("not" in r) parts.push("not");
    parts.push(`from ${from}`);
    const dst = str(r, "dst");
    if (dst !== undefined && dst !== "all") parts.push(`to ${dst}/${str(r, "dstlen") ?? "32"}`);
    const iif = str(r, "iif");
    if (iif !== undefined) parts.push(`iif ${iif}`);
    const oif = str(r, "oif");
    if (oif !== undefined) parts.push(`oif ${oif}`);
    const fwmark = str(r, "fwmark");
    const fwmask = str(r, "fwmask");
    if (fwmark !== undefined) parts.push(`fwmark ${fwmark}${fwmask ? `/${fwmask}` : ""}`);
    const tos = str(r, "tos");
    if (tos !== undefined) parts.push(`tos ${tos}`);
    parts.push(tail);
    // Unique key: a rule with extra selectors is never one we want.
    rules.push({
      key: `other ${JSON.stringify(r)}`,
      exact: exact && from !== "all",
      del: parts.join(" "),
    });
  }
  return rules;
}

/** Selectors parseRules can name in a `rule del` line. */
const RULE_SELECTORS = new Set(["not", "dst", "dstlen", "iif", "oif", "fwmark", "fwmask", "tos"]);

/** A device name ip accepts: a syntax error would make `ip -batch` skip the rest of a batch. */
export function isDeviceName(name: string): boolean {
  return /^[^\s/]{1,15}$/.test(name) && name !== "." && name !== "..";
}

/** What marks our addresses on a device: the label `<dev>:eip`, when it fits (15 bytes). */
export function ourAddressLabel(dev: string): string | undefined {
  const label = `${dev}:eip`;
  return Buffer.byteLength(label) <= 15 ? label : undefined;
}

/** Parses `ip -json -4 addr show dev DEV`: the IPv4 addresses of the device. */
export function parseAddresses(json: string): KernelAddress[] {
  const result: KernelAddress[] = [];
  for (const link of parseJsonArray(json, "ip addr")) {
    const infos = link.addr_info;
    if (!Array.isArray(infos)) continue;
    for (const info of infos as JsonObject[]) {
      if (info.family !== "inet") continue;
      const local = str(info, "local");
      const prefix = Number(str(info, "prefixlen"));
      if (local === undefined || !Number.isInteger(prefix)) continue;
      const label = str(info, "label");
      result.push({
        address: canonicalIpv4(local) ?? local,
        prefix,
        secondary: info.secondary === true,
        ...(label === undefined ? {} : { label }),
      });
    }
  }
  return result;
}

/** A proxy neighbour entry: its address and its protocol (`ip neigh ... protocol P`), if any. */
export interface KernelProxy {
  readonly address: string;
  readonly protocol: number | undefined;
  /** The device, when ip shows it (a dump of every device does; `dev DEV` does not). */
  readonly dev?: string;
}

/** Parses `ip -4 -json neigh show proxy [dev DEV]`: the addresses proxied, with their protocol. */
export function parseProxies(json: string): KernelProxy[] {
  const result: KernelProxy[] = [];
  for (const entry of parseJsonArray(json, "ip neigh")) {
    const dst = str(entry, "dst");
    const address = dst === undefined ? undefined : canonicalIpv4(dst);
    const protocol = Number(str(entry, "protocol"));
    if (address === undefined) continue;
    const dev = str(entry, "dev");
    result.push({
      address,
      protocol: Number.isInteger(protocol) ? protocol : undefined,
      ...(dev === undefined ? {} : { dev }),
    });
  }
  return result;
}

/** A route of the main table with our protocol. */
export interface ArpRoute {
  /** The address of a host route (/32, tos 0, metric 0: the identity of ours); else undefined. */
  readonly address: string | undefined;
  /** The device of a host route that is a plain `dev D scope link` route; else undefined. */
  readonly dev: string | undefined;
  /** The batch line that deletes it. */
  readonly del: string;
}

/** Parses `ip -json route show table main proto P` (ip leaves the protocol out). */
export function parseArpRoutes(json: string, protocol: number): ArpRoute[] {
  const routes: ArpRoute[] = [];
  for (const r of parseJsonArray(json, "ip route")) {
    const rawDst = str(r, "dst");
    if (rawDst === undefined) continue;
    const dst = canonicalDst(rawDst);
    const tosText = str(r, "tos") ?? str(r, "dsfield") ?? "0";
    const tos = tosText === "0x00" || tosText === "0x0" ? "0" : tosText;
    const metric = Number(str(r, "metric") ?? "0") || 0;
    const host = dst.endsWith("/32") && tos === "0" && metric === 0;
    const dev = str(r, "dev");
    const plain =
      (str(r, "type") ?? "unicast") === "unicast" &&
      r.nexthops === undefined &&
      str(r, "gateway") === undefined &&
      str(r, "scope") === "link";
    routes.push({
      address: host ? dst.slice(0, -3) : undefined,
      dev: host && plain ? dev : undefined,
      del: `${routeDelLine(dst, tos, metric, "main")} proto ${protocol}`,
    });
  }
  return routes;
}
