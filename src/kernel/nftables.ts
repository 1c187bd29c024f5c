// NftablesManager: our nftables table (--dataplane nftables), and nothing outside it.
//
// What it owns: `table ip kube_eip`, whole (its layout: nftables-table.ts). While a binding
// is wanted the table holds exactly our sets, maps and chains with the desired elements;
// when none is, the table is deleted. It never lists, names or changes any other table.
//
// How it reads: `nft -j list table ip kube_eip` (a missing table, or a missing nft when
// none is wanted, reads as no table).
//
// How it writes: one `nft -f -` transaction (stdin) per apply, applied by the kernel as a
// whole or not at all. A table that is missing or whose objects differ from the layout is
// written whole (delete and re-create, in the same transaction: no packet sees it half
// made); otherwise the transaction holds only `delete element` lines for elements that must
// go, then `add element` lines for those missing (a map entry whose value changes is one
// delete and one add). One bind therefore writes four elements (six with the traffic
// counters), whatever the size of the maps.
//
// Belief: after a successful write the manager believes the table holds what it wrote and
// does not read again unless asked (reread). Any failure forgets the belief, so the next
// apply reads first. Each set's elements are a DeltaTracker, so a diff costs one lookup per
// desired element it holds and validates only the others.
import { canonicalIpv4, formatIpv4Net, netContains, parseIpv4Net } from "../common/ipv4.js";
import { type Binding, NFT_TABLE } from "../model/desired.js";
import { type Delta, type DeltaEntry, DeltaTracker } from "./delta.js";
import { KernelError, Phase, type KernelManager } from "./manager.js";
import {
  type CountsRead,
  type Family,
  IPV4,
  NO_COUNTS,
  SET_NAMES,
  type SetName,
  type TableRead,
  noElements,
  parseTable,
  renderElements,
  renderTable,
  tableName,
} from "./nftables-table.js";
import type { CommandRunner } from "./runner.js";

export interface NftablesDesired {
  readonly bindings: readonly Binding[];
  /** Canonical CIDRs. */
  readonly internalNets: readonly string[];
  /** The counting sets and chains (docs/traffic.md); off when absent. */
  readonly counters?: boolean;
}

export type NftablesSnapshot = TableRead;

interface Belief {
  readonly exists: boolean;
  readonly layoutOk: boolean;
  /** The layout the read was checked against. */
  readonly counters: boolean;
  readonly sets: Record<SetName, DeltaTracker<DeltaEntry>>;
  /** The counts read, carried over by a whole-table rewrite (none once written). */
  readonly counts: CountsRead;
}

export class NftablesManager implements KernelManager<NftablesDesired, NftablesSnapshot> {
  private desired: NftablesDesired = { bindings: [], internalNets: [] };
  private counters = false;
  private belief: Belief | undefined;

  constructor(
    private readonly runner: CommandRunner,
    private readonly family: Family = IPV4,
  ) {}

  setDesired(desired: NftablesDesired): void {
    this.desired = desired;
    this.counters = desired.counters === true;
  }

  async apply(options: { reread: boolean }): Promise<number> {
    const desired = this.desired;
    try {
      const wanted = desiredElements(desired);
      if (options.reread || this.belief === undefined || this.belief.counters !== this.counters) {
        this.belief = beliefOf(await this.readTable(wanted === undefined), this.counters);
      }
      const belief = this.belief;
      let script = "";
      let count = 0;
      let next: Belief | undefined;
      const commits: [DeltaTracker<DeltaEntry>, Delta][] = [];
      if (wanted === undefined) {
        if (!belief.exists) return 0;
        script = `delete table ${tableName(this.family)}\n`;
        count = 1;
        next = beliefOf(NO_TABLE, this.counters);
      } else if (!belief.layoutOk) {
        for (const set of SET_NAMES) wanted[set].forEach((e) => CANONICAL[set](e));
        script = renderTable(this.family, wanted, {
          counters: this.counters,
          counts: belief.counts,
        });
        count = 1;
        next = beliefOf(
          { exists: true, layoutOk: true, elements: wanted, counts: NO_COUNTS },
          this.counters,
        );
      } else {
        let deletes = "";
        let adds = "";
        for (const set of SET_NAMES) {
          const tracker = belief.sets[set];
          const delta = tracker.diff(wanted[set], { canonical: CANONICAL[set] });
          if (delta.adds.length === 0 && delta.deletes.length === 0) continue;
          deletes += renderElements(this.family, set, "delete", delta.deletes);
          adds += renderElements(this.family, set, "add", delta.adds);
          count += delta.adds.length + delta.deletes.length;
          commits.push([tracker, delta]);
        }
        if (count === 0) return 0;
        script = deletes + adds;
      }
      // Forget the belief before writing: a failed write leaves it unknown.
      this.belief = undefined;
      await this.runner.run("nft", ["-f", "-"], { input: script });
      for (const [tracker, delta] of commits) tracker.commit(delta, (_key, base) => base);
      this.belief = next ?? belief;
      return count;
    } catch (err) {
      this.belief = undefined;
      throw asKernelError(err);
    }
  }

  async read(): Promise<NftablesSnapshot> {
    try {
      return await this.readTable(desiredElements(this.desired) === undefined);
    } catch (err) {
      throw asKernelError(err);
    }
  }

  adopt(snapshot: NftablesSnapshot): void {
    this.belief = beliefOf(snapshot, this.counters);
  }

  /** The table as it is; `absentOk`: a node without nft holds no table of ours either. */
  private async readTable(absentOk: boolean): Promise<TableRead> {
    try {
      const { stdout } = await this.runner.run("nft", [
        "-j",
        "list",
        "table",
        this.family.name,
        NFT_TABLE,
      ]);
      return parseTable(this.family, stdout, { counters: this.counters });
    } catch (err) {
      if (isNoTable(err) || (absentOk && isNoNft(err))) return NO_TABLE;
      throw err;
    }
  }
}

const NO_TABLE: TableRead = {
  exists: false,
  layoutOk: false,
  elements: noElements(),
  counts: NO_COUNTS,
};

function beliefOf(read: TableRead, counters: boolean): Belief {
  const sets = {} as Record<SetName, DeltaTracker<DeltaEntry>>;
  for (const set of SET_NAMES) {
    const entries = new Map<string, DeltaEntry>();
    read.elements[set].forEach((key, order) => entries.set(key, { seen: 0, pos: order, order }));
    sets[set] = new DeltaTracker(entries);
  }
  return { exists: read.exists, layoutOk: read.layoutOk, counters, sets, counts: read.counts };
}

/** The elements of each set; undefined when no binding is wanted (no table). */
function desiredElements(desired: NftablesDesired): Record<SetName, string[]> | undefined {
  if (desired.bindings.length === 0) return undefined;
  const eips: string[] = [];
  const vmis: string[] = [];
  const eipVmi: string[] = [];
  const vmiEip: string[] = [];
  for (const b of desired.bindings) {
    const pair = pairsOf(b);
    eips.push(b.eip);
    vmis.push(b.vmi);
    eipVmi.push(pair.eipVmi);
    vmiEip.push(pair.vmiEip);
  }
  const counted = desired.counters === true ? eips : [];
  return {
    internal_nets: outermost(desired.internalNets),
    eips,
    vmis,
    eip_vmi: eipVmi,
    vmi_eip: vmiEip,
    eip_rx: counted,
    eip_tx: counted,
  };
}

const pairs = new WeakMap<Binding, { eip: string; vmi: string; eipVmi: string; vmiEip: string }>();

/** A binding's map elements, made once per binding object (see rulesOf in plan.ts). */
function pairsOf(b: Binding): { eipVmi: string; vmiEip: string } {
  const cached = pairs.get(b);
  if (cached !== undefined && cached.eip === b.eip && cached.vmi === b.vmi) return cached;
  const made = {
    eip: b.eip,
    vmi: b.vmi,
    eipVmi: `${b.eip} : ${b.vmi}`,
    vmiEip: `${b.vmi} : ${b.eip}`,
  };
  pairs.set(b, made);
  return made;
}

/**
 * The nets that no other net contains: an interval set refuses overlapping elements, and a
 * net inside another changes nothing of what the set matches.
 */
function outermost(nets: readonly string[]): string[] {
  const parsed = nets.map((net) => {
    const p = parseIpv4Net(net);
    if (p === undefined)
      throw new KernelError(Phase.Nat, `invalid internal net ${JSON.stringify(net)}`);
    return p;
  });
  const kept = parsed.filter(
    (net, i) =>
      !parsed.some((other, j) => {
        if (j === i || other.prefix > net.prefix) return false;
        // Of two equal nets, the first stays.
        if (other.prefix === net.prefix && j > i) return false;
        return netContains(other, net.base);
      }),
  );
  return [...new Set(kept.map(formatIpv4Net))];
}

function address(item: string): string {
  const canonical = canonicalIpv4(item);
  if (canonical === undefined)
    throw new KernelError(Phase.Nat, `invalid address ${JSON.stringify(item)}`);
  return canonical;
}

function pair(item: string): string {
  const [key = "", value = "", ...rest] = item.split(" : ");
  if (rest.length > 0)
    throw new KernelError(Phase.Nat, `invalid map element ${JSON.stringify(item)}`);
  return `${address(key)} : ${address(value)}`;
}

function net(item: string): string {
  const parsed = parseIpv4Net(item);
  if (parsed === undefined) throw new KernelError(Phase.Nat, `invalid net ${JSON.stringify(item)}`);
  return formatIpv4Net(parsed);
}

/** Validates a desired element that is to be written, and gives its canonical key. */
const CANONICAL: Record<SetName, (item: string) => string> = {
  internal_nets: net,
  eips: address,
  vmis: address,
  eip_vmi: pair,
  vmi_eip: pair,
  eip_rx: address,
  eip_tx: address,
};

function stderrOf(err: unknown): string {
  if (typeof err === "object" && err !== null && "stderr" in err) {
    const { stderr } = err as { stderr: unknown };
    if (typeof stderr === "string") return stderr;
  }
  return "";
}

/** nft's answer for a table that does not exist. */
function isNoTable(err: unknown): boolean {
  const stderr = stderrOf(err);
  return /No such file or directory/.test(stderr) && /list table/.test(stderr);
}

/** nft is not installed (spawn's ENOENT, or `ip netns exec` failing to run it). */
function isNoNft(err: unknown): boolean {
  if (typeof err === "object" && err !== null && (err as { code?: unknown }).code === "ENOENT") {
    return true;
  }
  return /exec of "nft" failed/.test(stderrOf(err));
}

function asKernelError(err: unknown): KernelError {
  if (err instanceof KernelError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new KernelError(Phase.Nat, `nftables: ${message}`, { cause: err });
}
