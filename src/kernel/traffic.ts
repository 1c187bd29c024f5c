// Reading the per-EIP traffic counters the kernel keeps (docs/traffic.md). Read only: the
// counting objects are written by the dataplane's managers (plan.ts for iptables,
// nftables-table.ts for nftables), and these readers run in the background (the agent's
// TrafficMonitor), never on a request's path.
//
// - iptables: `ipset save kube-eip-traffic`, one line per member, `add kube-eip-traffic
//   ADDR packets N bytes M`: an EIP's member counts what arrived for it, its VMI's member
//   what the VMI sent as from the EIP.
// - nftables: `nft -j list set ip kube_eip eip_rx` and `... eip_tx`, one counter per EIP.
// A set or table that does not exist (no binding yet, counting off) reads as no counts.
import { SET_TRAFFIC, type Binding, NFT_TABLE } from "../model/desired.js";
import { canonicalAddress } from "./canonical.js";
import { KernelError, Phase } from "./manager.js";
import { type Counts, parseCountSet } from "./nftables-table.js";
import type { CommandRunner } from "./runner.js";

export type { Counts };

/** One binding's counts, as ListBindings and the metrics show them. */
export interface TrafficCounts {
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly rxPackets: number;
  readonly txPackets: number;
}

export const ZERO_TRAFFIC: TrafficCounts = { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 };

export interface TrafficReader {
  /** Each binding's counts, by EIP (a binding the kernel holds no counter for is absent). */
  read(bindings: readonly Binding[]): Promise<Map<string, TrafficCounts>>;
}

/** Parses `ipset save <set>` output: each member's counters (members without are skipped). */
export function parseIpsetCounters(text: string, set: string): Map<string, Counts> {
  const result = new Map<string, Counts>();
  const prefix = `add ${set} `;
  for (const line of text.split("\n")) {
    if (!line.startsWith(prefix)) continue;
    const [member = "", ...options] = line.slice(prefix.length).trim().split(/\s+/);
    const address = canonicalAddress(member);
    const packets = countAfter(options, "packets");
    const bytes = countAfter(options, "bytes");
    if (address === undefined || packets === undefined || bytes === undefined) continue;
    result.set(address, { packets, bytes });
  }
  return result;
}

function countAfter(options: readonly string[], name: string): number | undefined {
  const at = options.indexOf(name);
  const text = at === -1 ? undefined : options[at + 1];
  if (text === undefined || !/^\d{1,16}$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : undefined;
}

function combine(rx: Counts | undefined, tx: Counts | undefined): TrafficCounts | undefined {
  if (rx === undefined && tx === undefined) return undefined;
  return {
    rxBytes: rx?.bytes ?? 0,
    txBytes: tx?.bytes ?? 0,
    rxPackets: rx?.packets ?? 0,
    txPackets: tx?.packets ?? 0,
  };
}

/** --dataplane iptables: the members of kube-eip-traffic. */
export class IpsetTrafficReader implements TrafficReader {
  constructor(private readonly runner: CommandRunner) {}

  async read(bindings: readonly Binding[]): Promise<Map<string, TrafficCounts>> {
    let text: string;
    try {
      text = (await this.runner.run("ipset", ["save", SET_TRAFFIC])).stdout;
    } catch (err) {
      if (/does not exist/.test(stderrOf(err))) return new Map();
      throw asKernelError(err, Phase.Ipset);
    }
    const counts = parseIpsetCounters(text, SET_TRAFFIC);
    const result = new Map<string, TrafficCounts>();
    for (const b of bindings) {
      const c = combine(counts.get(b.eip), counts.get(b.vmi));
      if (c !== undefined) result.set(b.eip, c);
    }
    return result;
  }
}

/** --dataplane nftables: the elements of eip_rx and eip_tx in our table. */
export class NftTrafficReader implements TrafficReader {
  constructor(private readonly runner: CommandRunner) {}

  async read(bindings: readonly Binding[]): Promise<Map<string, TrafficCounts>> {
    const [rx, tx] = await Promise.all([this.readSet("eip_rx"), this.readSet("eip_tx")]);
    const result = new Map<string, TrafficCounts>();
    for (const b of bindings) {
      const c = combine(rx.get(b.eip), tx.get(b.eip));
      if (c !== undefined) result.set(b.eip, c);
    }
    return result;
  }

  private async readSet(set: string): Promise<Map<string, Counts>> {
    try {
      const { stdout } = await this.runner.run("nft", ["-j", "list", "set", "ip", NFT_TABLE, set]);
      return parseCountSet(stdout);
    } catch (err) {
      if (/No such file or directory/.test(stderrOf(err))) return new Map();
      throw asKernelError(err, Phase.Nat);
    }
  }
}

function stderrOf(err: unknown): string {
  const stderr = (err as { stderr?: unknown } | null)?.stderr;
  return typeof stderr === "string" ? stderr : "";
}

function asKernelError(err: unknown, phase: Phase): KernelError {
  if (err instanceof KernelError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new KernelError(phase, `traffic counters: ${message}`, { cause: err });
}
