// The kernel of a lab node: counting and flushing our state, on either dataplane.
import { ROUTE_TABLE_ID, RULE_PRIORITY } from "../../src/model/desired.js";
import { IPV4, parseTable } from "../../src/kernel/nftables-table.js";
import type { Lab } from "../../src/lab/lab.js";
import type { Variant } from "./settings.js";
import { GATEWAY_DEV } from "./shared.js";

export interface KernelCounts {
  readonly dnat: number;
  readonly snat: number;
  readonly forward: number;
  readonly ipsetEip: number;
  readonly ipsetVmi: number;
  readonly rules: number;
  readonly addresses: number;
  /** Proxy neighbour entries on the gateway device (--arp-poisoning). */
  readonly proxies: number;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function jsonArray(text: string): unknown[] {
  const parsed: unknown = JSON.parse(text.trim() === "" ? "[]" : text);
  return Array.isArray(parsed) ? (parsed as unknown[]) : [];
}

export async function ipsetSize(lab: Lab, node: number, set: string): Promise<number> {
  try {
    const { stdout } = await lab.nodeExec(node, ["ipset", "list", "-t", set]);
    const match = /Number of entries: (\d+)/.exec(stdout);
    return match ? Number(match[1]) : 0;
  } catch {
    return 0; // no such set yet
  }
}

export async function ruleCount(lab: Lab, node: number): Promise<number> {
  const { stdout } = await lab.nodeExec(node, ["ip", "-json", "-N", "rule", "show"]);
  return jsonArray(stdout).filter((r) => isRecord(r) && r.priority === RULE_PRIORITY).length;
}

export async function countKernel(lab: Lab, node: number, v: Variant): Promise<KernelCounts> {
  if (v.dataplane === "nftables") return countNftables(lab, node);
  const mode = v.mode;
  const count = (text: string, prefix: string) =>
    text.split("\n").filter((line) => line.startsWith(prefix)).length;
  const [nat, filter, ipsetEip, ipsetVmi, rules, addresses, proxies] = await Promise.all([
    lab.nodeExec(node, [`iptables-${mode}-save`, "-t", "nat"]),
    lab.nodeExec(node, [`iptables-${mode}-save`, "-t", "filter"]),
    ipsetSize(lab, node, "kube-eip-eip"),
    ipsetSize(lab, node, "kube-eip-vmi"),
    ruleCount(lab, node),
    addressCount(lab, node),
    proxyCount(lab, node),
  ]);
  return {
    dnat: count(nat.stdout, "-A KUBE-EIP-PREROUTING "),
    snat: count(nat.stdout, "-A KUBE-EIP-POSTROUTING "),
    // The agent's chain also holds the one conntrack reply rule.
    forward: Math.max(0, count(filter.stdout, "-A KUBE-EIP-FORWARD ") - 1),
    ipsetEip,
    ipsetVmi,
    rules,
    addresses,
    proxies,
  };
}

/** The counts of the nftables dataplane: its maps' and sets' elements (no table: none). */
async function countNftables(lab: Lab, node: number): Promise<KernelCounts> {
  const [table, rules, addresses, proxies] = await Promise.all([
    lab.nodeExec(node, ["nft", "-j", "list", "table", "ip", "kube_eip"]).then(
      (r) => parseTable(IPV4, r.stdout).elements,
      () => undefined,
    ),
    ruleCount(lab, node),
    addressCount(lab, node),
    proxyCount(lab, node),
  ]);
  return {
    dnat: table?.eip_vmi.length ?? 0,
    snat: table?.vmi_eip.length ?? 0,
    forward: table?.eips.length ?? 0,
    ipsetEip: table?.eips.length ?? 0,
    ipsetVmi: table?.vmis.length ?? 0,
    rules,
    addresses,
    proxies,
  };
}

async function proxyCount(lab: Lab, node: number): Promise<number> {
  const { stdout } = await lab.nodeExec(node, [
    "ip",
    "-4",
    "-json",
    "neigh",
    "show",
    "proxy",
    "dev",
    GATEWAY_DEV,
  ]);
  return jsonArray(stdout).length;
}

async function addressCount(lab: Lab, node: number): Promise<number> {
  const addrs = await lab.nodeExec(node, ["ip", "-json", "-4", "addr", "show", "dev", GATEWAY_DEV]);
  return jsonArray(addrs.stdout).reduce<number>(
    (sum, link) =>
      sum + (isRecord(link) && Array.isArray(link.addr_info) ? link.addr_info.length : 0),
    0,
  );
}

/**
 * Whether the node holds exactly `n` bindings' worth of state (forward: agent only), the
 * EIPs as addresses or, with `arp`, as proxy entries.
 */
export function holds(c: KernelCounts, n: number, withForward: boolean, arp = false): boolean {
  return (
    c.addresses === (arp ? 0 : n) &&
    c.proxies === (arp ? n : 0) &&
    c.dnat === n &&
    c.snat === n &&
    (!withForward || c.forward === n) &&
    c.ipsetEip === n &&
    c.ipsetVmi === n &&
    c.rules === n
  );
}

export function describeCounts(c: KernelCounts): string {
  return `dnat ${c.dnat}, snat ${c.snat}, forward ${c.forward}, ipset ${c.ipsetEip}/${c.ipsetVmi}, ip rules ${c.rules}, addresses ${c.addresses}, proxy entries ${c.proxies}`;
}

/** Removes our state from a node, leaving chains, sets, jumps in place (as after a wipe). */
export async function flushKernel(lab: Lab, node: number, v: Variant): Promise<void> {
  if (v.dataplane === "nftables") {
    // The table's maps and sets emptied, its chains left (as after a wipe of the elements).
    const input = ["map eip_vmi", "map vmi_eip", "set eips", "set vmis"]
      .map((s) => `flush ${s.split(" ")[0]} ip kube_eip ${s.split(" ")[1]}\n`)
      .join("");
    await lab.nodeExec(node, ["nft", "-f", "-"], { input }).catch(() => {});
  } else {
    const ipt = `iptables-${v.mode}`;
    await lab.nodeExec(node, [ipt, "-w", "5", "-t", "nat", "-F", "KUBE-EIP-PREROUTING"]);
    await lab.nodeExec(node, [ipt, "-w", "5", "-t", "nat", "-F", "KUBE-EIP-POSTROUTING"]);
    await lab.nodeExec(node, [ipt, "-w", "5", "-t", "filter", "-F", "KUBE-EIP-FORWARD"]);
    await lab.nodeExec(node, ["ipset", "flush", "kube-eip-eip"]);
    await lab.nodeExec(node, ["ipset", "flush", "kube-eip-vmi"]);
  }
  const rules = await ruleCount(lab, node);
  if (rules > 0) {
    // One process for all of them: `ip rule del` one by one would take minutes at 10,000.
    const input = `rule del priority ${RULE_PRIORITY}\n`.repeat(rules);
    await lab.nodeExec(node, ["ip", "-batch", "-"], { input });
  }
  await lab.nodeExec(node, ["ip", "addr", "flush", "dev", GATEWAY_DEV]);
  // --arp-poisoning's proxy entries and their host routes (protocol 225).
  await lab.nodeExec(node, ["ip", "neigh", "flush", "proxy", "dev", GATEWAY_DEV]);
  await lab.nodeExec(node, ["ip", "route", "flush", "table", "main", "proto", "225"]);
  await lab.nodeExec(node, ["ip", "route", "flush", "table", String(ROUTE_TABLE_ID)]);
}
