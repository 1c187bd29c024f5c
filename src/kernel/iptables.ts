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
interface RuleEntry {
  copies: number;
  /** The last diff pass that wanted this rule in the chain, and its desired index then. */
  seen: number;
  pos: number;
  /**
   * Its place in the chain: the kernel's order after a read, the desired order after a
   * write that changed the chain. Deletions are written in this order.
   */
  order: number;
  /** Whether the rule is one restore line (a rule read from the kernel may not be). */
  readonly valid: boolean;
}

interface TableBelief {
  readonly chains: Set<string>;
  readonly rules: Map<string, Map<string, RuleEntry>>;
  /** The chains whose rules were read: any other chain needs a read before a write. */
  readonly tracked: Set<string>;
}

/** What the write changes in one chain, to update the belief once it succeeded. */
interface ChainChange {
  readonly chain: string;
  readonly pass: number;
  /** Rules to drop from the belief (every copy deleted). */
  readonly removed: readonly string[];
  /** Rules that keep exactly one copy (extra copies deleted, or a jump inserted). */
  readonly single: readonly string[];
  /** Rules appended (owned chains), with their desired index. */
  readonly added: readonly string[];
  readonly addedPos: readonly number[];
  /** An owned chain: it is now in the desired order. */
  readonly owned: boolean;
}

interface TablePlan {
  readonly lines: string[];
  readonly changes: ChainChange[];
}

/** An owned chain's part of a table plan, which jumps into that chain must see. */
interface OwnedChain {
  readonly current: Map<string, RuleEntry> | undefined;
  readonly pass: number;
  readonly adding: ReadonlySet<string> | undefined;
}

const CHAIN_NAME = /^[^\s]+$/;
const RULE_TEXT = /^[^\r\n]*$/;

export class IptablesManager implements KernelManager<IptablesDesired, IptablesSnapshot> {
  private desired: IptablesDesired = { chains: [], jumps: [] };
  private belief = new Map<IptablesTable, TableBelief>();
  private readonly saveCommand: string;
  private readonly restoreCommand: string;
  /** Numbers the diff passes, so that marking a rule as wanted allocates nothing. */
  private pass = 0;

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
      // Each spec is its own pass: it is compared with the belief as it was.
      const pass = ++this.pass;
      const current = belief.rules.get(spec.name);
      // We own the chain: each desired rule exactly once.
      let hits = 0;
      let extraCopies = false;
      let adding: Set<string> | undefined;
      const added: string[] = [];
      const addedPos: number[] = [];
      // An index loop: a for-of allocates an iterator result per item until the loop is
      // optimised, and these loops run over every binding.
      const list = spec.rules;
      for (let pos = 0; pos < list.length; pos++) {
        const rule = list[pos] as string;
        const entry = current?.get(rule);
        if (entry !== undefined) {
          if (!entry.valid) invalid(desired);
          if (entry.seen !== pass) {
            entry.seen = pass;
            entry.pos = pos;
            hits++;
            if (entry.copies > 1) extraCopies = true;
          }
          continue;
        }
        if (!RULE_TEXT.test(rule)) invalid(desired);
        adding ??= new Set();
        if (adding.has(rule)) continue;
        adding.add(rule);
        added.push(rule);
        addedPos.push(pos);
      }
      const exists = belief.chains.has(spec.name);
      if (!exists) declares.push(`:${spec.name} - [0:0]`);
      const removed: string[] = [];
      const single: string[] = [];
      if (current !== undefined && (hits < current.size || extraCopies)) {
        // The rules that lose copies, in chain order. forEach: a for-of over the entries
        // allocates a pair per rule.
        const losing: string[] = [];
        current.forEach((entry, rule) => {
          if (entry.seen !== pass || entry.copies > 1) losing.push(rule);
        });
        losing.sort((a, b) => orderOf(current, a) - orderOf(current, b));
        for (const rule of losing) {
          const entry = current.get(rule) as RuleEntry;
          const keep = entry.seen === pass ? 1 : 0;
          for (let i = keep; i < entry.copies; i++) deletes.push(`-D ${spec.name} ${rule}`);
          (keep === 0 ? removed : single).push(rule);
        }
      }
      for (const rule of added) appends.push(`-A ${spec.name} ${rule}`);
      owned.set(spec.name, { current, pass, adding });
      if (!exists || removed.length > 0 || single.length > 0 || added.length > 0) {
        changes.push({ chain: spec.name, pass, removed, single, added, addedPos, owned: true });
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
        copies = belief.rules.get(jump.chain)?.get(jump.rule)?.copies ?? 0;
      } else {
        const wantedThere =
          ours.current?.get(jump.rule)?.seen === ours.pass || ours.adding?.has(jump.rule) === true;
        copies = wantedThere ? 1 : 0;
      }
      if (copies === 1) continue;
      for (let i = 1; i < copies; i++) jumpDeletes.push(`-D ${jump.chain} ${jump.rule}`);
      if (copies === 0) {
        const chainInserts = inserts.get(jump.chain) ?? [];
        chainInserts.push(`-I ${jump.chain} 1 ${jump.rule}`);
        inserts.set(jump.chain, chainInserts);
      }
      changes.push({
        chain: jump.chain,
        pass: 0,
        removed: [],
        single: [jump.rule],
        added: [],
        addedPos: [],
        owned: false,
      });
    }
    for (const old of desired.retiredJumps ?? []) {
      if (old.table !== table) continue;
      if (!CHAIN_NAME.test(old.chain) || !RULE_TEXT.test(old.rule)) invalid(desired);
      const copies = belief.rules.get(old.chain)?.get(old.rule)?.copies ?? 0;
      if (copies === 0) continue;
      for (let i = 0; i < copies; i++) jumpDeletes.push(`-D ${old.chain} ${old.rule}`);
      changes.push({
        chain: old.chain,
        pass: 0,
        removed: [old.rule],
        single: [],
        added: [],
        addedPos: [],
        owned: false,
      });
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
  const rules = new Map<string, Map<string, RuleEntry>>();
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
    rules.set(chain, entries);
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
    let rules = table.rules.get(change.chain);
    if (rules === undefined) {
      rules = new Map();
      table.rules.set(change.chain, rules);
    }
    for (const rule of change.removed) rules.delete(rule);
    for (const rule of change.single) {
      const entry = rules.get(rule);
      if (entry !== undefined) entry.copies = 1;
      else rules.set(rule, { copies: 1, seen: 0, pos: 0, order: LAST, valid: true });
    }
    change.added.forEach((rule, i) => {
      const pos = change.addedPos[i] ?? 0;
      rules.set(rule, { copies: 1, seen: change.pass, pos, order: pos, valid: true });
    });
    if (change.owned) {
      // Every rule left was wanted by this pass: the chain is now in the desired order.
      rules.forEach((entry) => {
        entry.order = entry.pos;
      });
    }
  }
}

/** The order of a rule added after the others (a jump inserted). */
const LAST = Number.MAX_SAFE_INTEGER;

function orderOf(rules: ReadonlyMap<string, RuleEntry>, rule: string): number {
  return rules.get(rule)?.order ?? 0;
}

function asKernelError(err: unknown): KernelError {
  if (err instanceof KernelError) return err;
  return new KernelError(Phase.Nat, `iptables: ${errorMessage(err)}`, { cause: err });
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
