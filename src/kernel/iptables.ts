// IptablesManager: our NAT/filter chains and the jumps into them, on the iptables backend
// (legacy or nft) the node uses.
//
// What it owns:
// - every rule of each ChainSpec chain (KUBE-EIP-PREROUTING, -POSTROUTING, -FORWARD): the
//   chain holds exactly the desired rules, once each; anything else in it is deleted;
// - one copy of each JumpSpec rule in a chain it does not own (PREROUTING, POSTROUTING,
//   FORWARD): inserted at the top when absent, extra copies deleted; every other rule of that
//   chain, and every other chain (KUBE-SERVICES...), is never touched. Chains are never
//   deleted or flushed;
// - each `retiredJumps` rule (one that an earlier version of ours or the seed kept in a chain it
//   does not own): every copy deleted.
//
// How it reads: `<backend>-save -t nat` and `-t filter` (only the tables the desired state
// uses), keeping the declared chain names and, for the chains we care about, each rule spec
// (the text after "-A CHAIN ") exactly as printed, with its number of copies. Rules compare
// as whole strings only: "-d 10.0.0.1/32 ..." never matches "-d 10.0.0.11/32 ...". This is
// sound because plan.ts renders rules in the canonical form iptables-save 1.8.9 prints
// (identical on both backends); a rule in any other spelling would be deleted and re-added
// on every re-read.
//
// How it writes: one `<backend>-restore --noflush -w 5` call whose stdin has a `*table ...
// COMMIT` section per table that changes. In each section: `:CHAIN - [0:0]` only for an owned
// chain that does not exist yet (in --noflush mode declaring an existing chain flushes it, so
// an existing chain is never declared), then `-D CHAIN rule` for each unwanted rule or extra
// copy in our chains, `-A CHAIN rule` for each missing one (order inside our chains does not
// matter: every rule matches distinct traffic), then `-D` of extra jump copies and of retired
// rules and `-I CHAIN 1 rule` for each missing jump, after the chain it jumps to has been declared. A single new
// binding therefore writes three lines, whatever the size of the chains. Each table section
// is committed atomically by iptables-restore (one nft transaction / one legacy table
// replace).
//
// Belief: after a successful write the manager updates what it believes each chain holds and
// does not read again unless asked (reread) or a chain/table it never read shows up. Any
// failure forgets the belief, so the next apply reads the kernel first. The belief is a map
// of rule -> copies per chain, updated in place with what was written; a diff costs one
// lookup per desired rule it already holds and validates only the rules it does not hold
// (rules it holds were validated when written, or read as one line), and walks a chain's
// rules only when some must go or, once, to renumber their order after a write that changed
// the chain; so its cost follows the change, not the size of the chains. read() and adopt()
// let the caller do the slow save apart from apply().
import type { ChainSpec, IptablesTable, JumpSpec } from "../model/desired.js";
import { type Delta, type DeltaEntry, DeltaTracker } from "./delta.js";
import { KernelError, Phase, type KernelManager } from "./manager.js";
import type { CommandRunner } from "./runner.js";
import { PreparedBeliefs, sameStrings } from "./snapshot.js";

export type IptablesMode = "legacy" | "nft";

export interface IptablesDesired {
  readonly chains: readonly ChainSpec[];
  readonly jumps: readonly JumpSpec[];
  /** Rules of ours in chains we do not own that must go (none when absent). */
  readonly retiredJumps?: readonly JumpSpec[];
}

/** Rule spec -> number of copies. */
export type RuleCounts = Map<string, number>;

export interface SavedTable {
  /** Every chain the table declares (built-in and user chains). */
  readonly chains: Set<string>;
  /** Rules of the chains that were asked for (all chains when none were named). */
  readonly rules: Map<string, RuleCounts>;
}

/**
 * Parses the `*table` section of iptables-save output. With `chains`, only the rules of
 * those chains are kept (declared chain names are always kept).
 */
export function parseIptablesSave(
  text: string,
  table: string,
  chains?: ReadonlySet<string>,
): SavedTable {
  const result: SavedTable = { chains: new Set(), rules: new Map() };
  let inTable = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("*")) {
      inTable = line.slice(1).trim() === table;
    } else if (!inTable) {
      continue;
    } else if (line.startsWith("-A ")) {
      const nameEnd = line.indexOf(" ", 3);
      const chain = nameEnd === -1 ? line.slice(3) : line.slice(3, nameEnd);
      if (chains !== undefined && !chains.has(chain)) continue;
      const rule = nameEnd === -1 ? "" : line.slice(nameEnd + 1);
      let counts = result.rules.get(chain);
      if (counts === undefined) {
        counts = new Map();
        result.rules.set(chain, counts);
      }
      counts.set(rule, (counts.get(rule) ?? 0) + 1);
    } else if (line.startsWith(":")) {
      const nameEnd = line.indexOf(" ");
      result.chains.add(nameEnd === -1 ? line.slice(1) : line.slice(1, nameEnd));
    } else if (line.startsWith("COMMIT")) {
      inTable = false;
    }
  }
  return result;
}

/** What read() returns: per table, the declared chains and the rules of the chains we need. */
export interface IptablesSnapshot {
  readonly tables: ReadonlyMap<IptablesTable, TableSnapshot>;
}

export interface TableSnapshot {
  readonly chains: ReadonlySet<string>;
  readonly rules: ReadonlyMap<string, ReadonlyMap<string, number>>;
  /** The chains whose rules were read. */
  readonly tracked: ReadonlySet<string>;
}

/** One rule of a chain as the manager believes the kernel holds it. */
interface RuleEntry extends DeltaEntry {
  copies: number;
  /** Whether the rule is one restore line (a rule read from the kernel may not be). */
  readonly valid: boolean;
}

interface TableBelief {
  readonly chains: Set<string>;
  readonly rules: Map<string, DeltaTracker<RuleEntry>>;
  /** The chains whose rules were read: any other chain needs a read before a write. */
  readonly tracked: Set<string>;
}

/** What the write changes in one chain, to update the belief once it succeeded. */
type ChainChange =
  | {
      /** An owned chain: the tracker that made `delta` (a new one for a new chain). */
      readonly owned: true;
      readonly chain: string;
      readonly rules: DeltaTracker<RuleEntry>;
      readonly delta: Delta;
    }
  | {
      /** A chain we keep jumps in. */
      readonly owned: false;
      readonly chain: string;
      /** Rules to drop from the belief (every copy deleted). */
      readonly removed: readonly string[];
      /** Rules that keep exactly one copy (extra copies deleted, or a jump inserted). */
      readonly single: readonly string[];
    };

interface TablePlan {
  readonly lines: string[];
  readonly changes: ChainChange[];
}

/** An owned chain's part of a table plan, which jumps into that chain must see. */
interface OwnedChain {
  readonly rules: DeltaTracker<RuleEntry>;
  readonly delta: Delta;
}

const CHAIN_NAME = /^[^\s]+$/;
const RULE_TEXT = /^[^\r\n]*$/;

export class IptablesManager implements KernelManager<IptablesDesired, IptablesSnapshot> {
  private desired: IptablesDesired = { chains: [], jumps: [] };
  private belief = new Map<IptablesTable, TableBelief>();
  private readonly saveCommand: string;
  private readonly restoreCommand: string;

  constructor(
    private readonly runner: CommandRunner,
    options: { mode: IptablesMode },
  ) {
    this.saveCommand = `iptables-${options.mode}-save`;
    this.restoreCommand = `iptables-${options.mode}-restore`;
  }

  setDesired(desired: IptablesDesired): void {
    this.desired = desired;
  }

  async apply(options: { reread: boolean }): Promise<number> {
    const desired = this.desired;
    try {
      const wanted = chainsByTable(desired);
      const stale = [...wanted].filter(([table, chains]) => {
        const belief = this.belief.get(table);
        return (
          options.reread || belief === undefined || [...chains].some((c) => !belief.tracked.has(c))
        );
      });
      if (stale.length > 0) {
        // Nothing is read for a desired state that could not be written.
        validate(desired);
        const read = await Promise.all(
          stale.map(([table, chains]) => this.readTable(table, chains)),
        );
        stale.forEach(([table], i) => {
          this.belief.set(table, tableBeliefOf(table, read[i] as TableSnapshot, desired));
        });
      }
      // Otherwise the plan validates what the belief does not hold: desired rules that the
      // belief holds were validated when they were written, or read as one line.

      const sections: string[] = [];
      const updates: [TableBelief, ChainChange[]][] = [];
      let count = 0;
      for (const table of wanted.keys()) {
        const belief = this.belief.get(table) as TableBelief;
        const plan = this.planTable(table, desired, belief);
        if (plan.lines.length === 0) continue;
        sections.push(`*${table}\n${plan.lines.join("\n")}\nCOMMIT\n`);
        updates.push([belief, plan.changes]);
        count += plan.lines.length;
      }
      if (count === 0) return 0;

      // Forget the belief before writing: a failed or partial write leaves it unknown.
      const belief = this.belief;
      this.belief = new Map();
      await this.runner.run(this.restoreCommand, ["--noflush", "-w", "5"], {
        input: sections.join(""),
      });
      for (const [table, changes] of updates) commit(table, changes);
      this.belief = belief;
      return count;
    } catch (err) {
      this.belief = new Map();
      throw asKernelError(err);
    }
  }

  async read(): Promise<IptablesSnapshot> {
    const desired = this.desired;
    try {
      const wanted = [...chainsByTable(desired)];
      const read = await Promise.all(
        wanted.map(([table, chains]) => this.readTable(table, chains)),
      );
      const snapshot = {
        tables: new Map(wanted.map(([table], i) => [table, read[i] as TableSnapshot])),
      };
      return prepared.put(snapshot, beliefsOf(snapshot, desired));
    } catch (err) {
      throw asKernelError(err);
    }
  }

  adopt(snapshot: IptablesSnapshot): void {
    const beliefs = prepared.take(snapshot) ?? beliefsOf(snapshot, this.desired);
    for (const [table, belief] of beliefs) this.belief.set(table, belief);
  }

  private async readTable(table: IptablesTable, chains: Set<string>): Promise<TableSnapshot> {
    const { stdout } = await this.runner.run(this.saveCommand, ["-t", table]);
    const saved = parseIptablesSave(stdout, table, chains);
    if (!stdout.includes(`*${table}`)) {
      throw new Error(`${this.saveCommand} -t ${table} printed no *${table} section`);
    }
    return { chains: saved.chains, rules: saved.rules, tracked: new Set(chains) };
  }

  /**
   * The restore lines for one table, and what they change. Cost: one map lookup per desired
   * rule the belief holds; a chain's rules are only walked when some of them must go.
   */
  private planTable(
    table: IptablesTable,
    desired: IptablesDesired,
    belief: TableBelief,
  ): TablePlan {
    const declares: string[] = [];
    const deletes: string[] = [];
    const appends: string[] = [];
    const changes: ChainChange[] = [];
    const owned = new Map<string, OwnedChain>();

    for (const spec of desired.chains) {
      if (spec.table !== table) continue;
      if (!CHAIN_NAME.test(spec.name)) invalid(desired);
      // We own the chain: each desired rule exactly once. Each spec is compared with the
      // belief as it was.
      const rules = belief.rules.get(spec.name) ?? new DeltaTracker<RuleEntry>();
      const delta = rules.diff(spec.rules, {
        // Rules the belief holds were validated when written, or read as one line.
        canonical: (rule) => (RULE_TEXT.test(rule) ? rule : invalid(desired)),
        usable: (entry) => entry.valid,
        changed: (entry) => entry.copies > 1,
      });
      const exists = belief.chains.has(spec.name);
      if (!exists) declares.push(`:${spec.name} - [0:0]`);
      // The rules that lose copies (unwanted ones all, wanted ones their extra copies), in
      // chain order.
      const believed = rules.believed;
      const losing =
        delta.changes.length === 0
          ? delta.deletes
          : [...delta.deletes, ...delta.changes].sort(
              (a, b) => (believed.get(a)?.order ?? 0) - (believed.get(b)?.order ?? 0),
            );
      for (const rule of losing) {
        const entry = believed.get(rule) as RuleEntry;
        const keep = entry.seen === delta.pass ? 1 : 0;
        for (let i = keep; i < entry.copies; i++) deletes.push(`-D ${spec.name} ${rule}`);
      }
      for (const rule of delta.adds) appends.push(`-A ${spec.name} ${rule}`);
      owned.set(spec.name, { rules, delta });
      if (!exists || losing.length > 0 || delta.adds.length > 0) {
        changes.push({ owned: true, chain: spec.name, rules, delta });
      }
    }

    const jumpDeletes: string[] = [];
    const inserts = new Map<string, string[]>();
    const seen = new Set<string>();
    for (const jump of desired.jumps) {
      if (jump.table !== table) continue;
      if (!CHAIN_NAME.test(jump.chain) || !RULE_TEXT.test(jump.rule)) invalid(desired);
      const key = `${jump.chain} ${jump.rule}`;
      if (seen.has(key)) continue;
      seen.add(key);
      // A jump into a chain we own sees that chain as it is after the write.
      const ours = owned.get(jump.chain);
      let copies: number;
      if (ours === undefined) {
        copies = belief.rules.get(jump.chain)?.believed.get(jump.rule)?.copies ?? 0;
      } else {
        const wantedThere =
          ours.rules.wanted(ours.delta, jump.rule) || ours.delta.adds.includes(jump.rule);
        copies = wantedThere ? 1 : 0;
      }
      if (copies === 1) continue;
      for (let i = 1; i < copies; i++) jumpDeletes.push(`-D ${jump.chain} ${jump.rule}`);
      if (copies === 0) {
        const chainInserts = inserts.get(jump.chain) ?? [];
        chainInserts.push(`-I ${jump.chain} 1 ${jump.rule}`);
        inserts.set(jump.chain, chainInserts);
      }
      changes.push({ owned: false, chain: jump.chain, removed: [], single: [jump.rule] });
    }
    for (const old of desired.retiredJumps ?? []) {
      if (old.table !== table) continue;
      if (!CHAIN_NAME.test(old.chain) || !RULE_TEXT.test(old.rule)) invalid(desired);
      const copies = belief.rules.get(old.chain)?.believed.get(old.rule)?.copies ?? 0;
      if (copies === 0) continue;
      for (let i = 0; i < copies; i++) jumpDeletes.push(`-D ${old.chain} ${old.rule}`);
      changes.push({ owned: false, chain: old.chain, removed: [old.rule], single: [] });
    }
    // Each insert goes to position 1: insert a chain's last jump first, so that its jumps end
    // up in spec order.
    const inserted = [...inserts.values()].flatMap((lines) => lines.reverse());

    return {
      lines: [...declares, ...deletes, ...appends, ...jumpDeletes, ...inserted],
      changes,
    };
  }
}

/** Each rule is one restore line: nothing may smuggle in a line break. */
function validate(desired: IptablesDesired): void {
  for (const spec of desired.chains) {
    if (!CHAIN_NAME.test(spec.name) || !spec.rules.every((rule) => RULE_TEXT.test(rule))) {
      throw new KernelError(Phase.Nat, `invalid chain spec ${JSON.stringify(spec.name)}`);
    }
  }
  for (const jump of [...desired.jumps, ...(desired.retiredJumps ?? [])]) {
    if (!CHAIN_NAME.test(jump.chain) || !RULE_TEXT.test(jump.rule)) {
      throw new KernelError(Phase.Nat, `invalid jump ${JSON.stringify(jump)}`);
    }
  }
}

/** Throws the error validate() reports for the first invalid item, as a full check would. */
function invalid(desired: IptablesDesired): never {
  validate(desired);
  throw new KernelError(Phase.Nat, "invalid desired state");
}

/** Table -> the chains whose rules we need to know (owned chains and jump chains). */
function chainsByTable(desired: IptablesDesired): Map<IptablesTable, Set<string>> {
  const result = new Map<IptablesTable, Set<string>>();
  const add = (table: IptablesTable, chain: string) => {
    let chains = result.get(table);
    if (chains === undefined) {
      chains = new Set();
      result.set(table, chains);
    }
    chains.add(chain);
  };
  for (const spec of desired.chains) add(spec.table, spec.name);
  for (const jump of desired.jumps) add(jump.table, jump.chain);
  for (const old of desired.retiredJumps ?? []) add(old.table, old.chain);
  return result;
}

const prepared = new PreparedBeliefs<IptablesSnapshot, Map<IptablesTable, TableBelief>>();

function beliefsOf(
  snapshot: IptablesSnapshot,
  desired: IptablesDesired,
): Map<IptablesTable, TableBelief> {
  const result = new Map<IptablesTable, TableBelief>();
  for (const [table, saved] of snapshot.tables) {
    result.set(table, tableBeliefOf(table, saved, desired));
  }
  return result;
}

/**
 * A fresh belief from a table's snapshot (which is never changed), keyed by the string
 * objects of `desired` where they are equal (see snapshot.ts).
 */
function tableBeliefOf(
  table: IptablesTable,
  saved: TableSnapshot,
  desired: IptablesDesired,
): TableBelief {
  const rules = new Map<string, DeltaTracker<RuleEntry>>();
  for (const [chain, counts] of saved.rules) {
    const same = sameStrings(desiredRules(desired, table, chain));
    const entries = new Map<string, RuleEntry>();
    let order = 0;
    counts.forEach((copies, rule) => {
      entries.set(same.get(rule) ?? rule, {
        copies,
        seen: 0,
        pos: order,
        order,
        valid: isOneLine(rule),
      });
      order++;
    });
    rules.set(chain, new DeltaTracker(entries));
  }
  return { chains: new Set(saved.chains), rules, tracked: new Set(saved.tracked) };
}

/** The desired rules of a chain: its rules if we own it, else the jumps we keep in it. */
function* desiredRules(
  desired: IptablesDesired,
  table: IptablesTable,
  chain: string,
): Generator<string> {
  for (const spec of desired.chains) {
    if (spec.table === table && spec.name === chain) yield* spec.rules;
  }
  for (const jump of [...desired.jumps, ...(desired.retiredJumps ?? [])]) {
    if (jump.table === table && jump.chain === chain) yield jump.rule;
  }
}

/** Same as RULE_TEXT.test(rule), without a regex (run on every rule of a read). */
function isOneLine(rule: string): boolean {
  return !rule.includes("\n") && !rule.includes("\r");
}

/** Updates a table's belief after a successful restore. */
function commit(table: TableBelief, changes: readonly ChainChange[]): void {
  for (const change of changes) {
    table.chains.add(change.chain);
    if (change.owned) {
      const { rules, delta } = change;
      table.rules.set(change.chain, rules);
      rules.commit(delta, (_rule, base) => ({ ...base, copies: 1, valid: true }));
      for (const rule of delta.changes) (rules.believed.get(rule) as RuleEntry).copies = 1;
      continue;
    }
    let rules = table.rules.get(change.chain);
    if (rules === undefined) {
      rules = new DeltaTracker();
      table.rules.set(change.chain, rules);
    }
    const believed = rules.believed;
    for (const rule of change.removed) believed.delete(rule);
    for (const rule of change.single) {
      const entry = believed.get(rule);
      if (entry !== undefined) entry.copies = 1;
      else believed.set(rule, { copies: 1, seen: 0, pos: 0, order: LAST, valid: true });
    }
  }
}

/** The order of a rule added after the others (a jump inserted). */
const LAST = Number.MAX_SAFE_INTEGER;

function asKernelError(err: unknown): KernelError {
  if (err instanceof KernelError) return err;
  return new KernelError(Phase.Nat, `iptables: ${errorMessage(err)}`, { cause: err });
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
