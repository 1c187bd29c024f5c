// IptablesManager: our NAT/filter chains and the jumps into them, on the iptables backend
// (legacy or nft) the node uses.
//
// What it owns:
// - every rule of each ChainSpec chain (KUBE-EIP-PREROUTING, -POSTROUTING, -FORWARD): the
//   chain holds exactly the desired rules, once each; anything else in it is deleted;
// - one copy of each JumpSpec rule in a chain it does not own (PREROUTING, POSTROUTING,
//   FORWARD): inserted at the top when absent, extra copies deleted; every other rule of that
//   chain, and every other chain (KUBE-SERVICES...), is never touched. Chains are never
//   deleted or flushed.
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
// matter: every rule matches distinct traffic), then `-D` of extra jump copies and `-I CHAIN 1
// rule` for each missing jump, after the chain it jumps to has been declared. A single new
// binding therefore writes three lines, whatever the size of the chains. Each table section
// is committed atomically by iptables-restore (one nft transaction / one legacy table
// replace).
//
// Belief: after a successful write the manager updates what it believes each chain holds and
// does not read again unless asked (reread) or a chain/table it never read shows up. Any
// failure forgets the belief, so the next apply reads the kernel first.
import type { ChainSpec, IptablesTable, JumpSpec } from "../agent/plan.js";
import { KernelError, Phase, type KernelManager } from "./manager.js";
import type { CommandRunner } from "./runner.js";

export type IptablesMode = "legacy" | "nft";

export interface IptablesDesired {
  readonly chains: readonly ChainSpec[];
  readonly jumps: readonly JumpSpec[];
}

/** Rule spec -> number of copies. */
export type RuleCounts = Map<string, number>;

export interface SavedTable {
  /** Every chain the table declares (built-in and user chains). */
  readonly chains: Set<string>;
  /** Rules of the chains that were asked for (all chains when none were named). */
  readonly rules: Map<string, RuleCounts>;
}

/** The chain names kubelet (1.17+) creates; their presence tells which backend it uses. */
const KUBELET_HINT_CHAINS = new Set(["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"]);

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

/** Number of rules ("-A" lines) in iptables-save output. */
export function countSavedRules(text: string): number {
  let count = 0;
  for (const line of text.split("\n")) if (line.startsWith("-A")) count++;
  return count;
}

function hasKubeletHint(text: string): boolean {
  for (const line of text.split("\n")) {
    if (!line.startsWith(":")) continue;
    const nameEnd = line.indexOf(" ");
    if (KUBELET_HINT_CHAINS.has(nameEnd === -1 ? line.slice(1) : line.slice(1, nameEnd))) {
      return true;
    }
  }
  return false;
}

/**
 * Which iptables backend the node uses, decided as kubernetes-sigs/iptables-wrappers does:
 * a backend holding kubelet's hint chains wins (legacy checked first); otherwise the backend
 * with more rules (iptables + ip6tables), a tie going to nft. A save command that fails
 * counts as empty. Never passes `-t` to the legacy tools: that would create the table.
 */
export async function detectIptablesMode(runner: CommandRunner): Promise<IptablesMode> {
  const save = async (command: string): Promise<string> => {
    try {
      return (await runner.run(command, [])).stdout;
    } catch {
      return "";
    }
  };
  const legacy = await save("iptables-legacy-save");
  if (hasKubeletHint(legacy)) return "legacy";
  const nft = await save("iptables-nft-save");
  if (hasKubeletHint(nft)) return "nft";
  const [legacy6, nft6] = await Promise.all([
    save("ip6tables-legacy-save"),
    save("ip6tables-nft-save"),
  ]);
  const legacyRules = countSavedRules(legacy) + countSavedRules(legacy6);
  const nftRules = countSavedRules(nft) + countSavedRules(nft6);
  return legacyRules > nftRules ? "legacy" : "nft";
}

interface TableBelief {
  readonly chains: Set<string>;
  readonly rules: Map<string, RuleCounts>;
  /** The chains whose rules were read: any other chain needs a read before a write. */
  readonly tracked: Set<string>;
}

interface TablePlan {
  readonly lines: string[];
  /** Chain -> the rule counts it holds after the write. */
  readonly after: Map<string, RuleCounts>;
}

export class IptablesManager implements KernelManager<IptablesDesired> {
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
      validate(desired);
      const wanted = chainsByTable(desired);
      const stale = [...wanted].filter(([table, chains]) => {
        const belief = this.belief.get(table);
        return (
          options.reread || belief === undefined || [...chains].some((c) => !belief.tracked.has(c))
        );
      });
      if (stale.length > 0) {
        const read = await Promise.all(stale.map(([table, chains]) => this.read(table, chains)));
        stale.forEach(([table], i) => this.belief.set(table, read[i] as TableBelief));
      }

      const sections: string[] = [];
      const updates: [TableBelief, Map<string, RuleCounts>][] = [];
      let count = 0;
      for (const table of wanted.keys()) {
        const belief = this.belief.get(table) as TableBelief;
        const plan = planTable(table, desired, belief);
        if (plan.lines.length === 0) continue;
        sections.push(`*${table}\n${plan.lines.join("\n")}\nCOMMIT\n`);
        updates.push([belief, plan.after]);
        count += plan.lines.length;
      }
      if (count === 0) return 0;

      // Forget the belief before writing: a failed or partial write leaves it unknown.
      const belief = this.belief;
      this.belief = new Map();
      await this.runner.run(this.restoreCommand, ["--noflush", "-w", "5"], {
        input: sections.join(""),
      });
      for (const [table, after] of updates) {
        for (const [chain, rules] of after) {
          table.chains.add(chain);
          table.rules.set(chain, rules);
        }
      }
      this.belief = belief;
      return count;
    } catch (err) {
      this.belief = new Map();
      if (err instanceof KernelError) throw err;
      throw new KernelError(Phase.Nat, `iptables: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async read(table: IptablesTable, chains: Set<string>): Promise<TableBelief> {
    const { stdout } = await this.runner.run(this.saveCommand, ["-t", table]);
    const saved = parseIptablesSave(stdout, table, chains);
    if (!stdout.includes(`*${table}`)) {
      throw new Error(`${this.saveCommand} -t ${table} printed no *${table} section`);
    }
    return { chains: saved.chains, rules: saved.rules, tracked: new Set(chains) };
  }
}

/** Each rule is one restore line: nothing may smuggle in a line break. */
function validate(desired: IptablesDesired): void {
  const chainName = /^[^\s]+$/;
  const ruleText = /^[^\r\n]*$/;
  for (const spec of desired.chains) {
    if (!chainName.test(spec.name) || !spec.rules.every((rule) => ruleText.test(rule))) {
      throw new KernelError(Phase.Nat, `invalid chain spec ${JSON.stringify(spec.name)}`);
    }
  }
  for (const jump of desired.jumps) {
    if (!chainName.test(jump.chain) || !ruleText.test(jump.rule)) {
      throw new KernelError(Phase.Nat, `invalid jump ${JSON.stringify(jump)}`);
    }
  }
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
  return result;
}

/** The restore lines for one table, and what its chains hold afterwards. */
function planTable(table: IptablesTable, desired: IptablesDesired, belief: TableBelief): TablePlan {
  const declares: string[] = [];
  const deletes: string[] = [];
  const appends: string[] = [];
  const after = new Map<string, RuleCounts>();

  for (const spec of desired.chains) {
    if (spec.table !== table) continue;
    const exists = belief.chains.has(spec.name);
    const current = belief.rules.get(spec.name) ?? new Map<string, number>();
    // We own the chain: each desired rule exactly once.
    const want: RuleCounts = new Map();
    for (const rule of spec.rules) want.set(rule, 1);
    let changed = false;
    if (!exists) {
      declares.push(`:${spec.name} - [0:0]`);
      changed = true;
    }
    for (const [rule, copies] of current) {
      for (let i = want.has(rule) ? 1 : 0; i < copies; i++) {
        deletes.push(`-D ${spec.name} ${rule}`);
        changed = true;
      }
    }
    for (const rule of want.keys()) {
      if (!current.has(rule)) {
        appends.push(`-A ${spec.name} ${rule}`);
        changed = true;
      }
    }
    if (changed) after.set(spec.name, want);
  }

  const jumpDeletes: string[] = [];
  const inserts = new Map<string, string[]>();
  const seen = new Set<string>();
  for (const jump of desired.jumps) {
    if (jump.table !== table) continue;
    const key = `${jump.chain} ${jump.rule}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const current = after.get(jump.chain) ?? belief.rules.get(jump.chain) ?? new Map();
    const copies = current.get(jump.rule) ?? 0;
    if (copies === 1) continue;
    for (let i = 1; i < copies; i++) jumpDeletes.push(`-D ${jump.chain} ${jump.rule}`);
    if (copies === 0) {
      const chainInserts = inserts.get(jump.chain) ?? [];
      chainInserts.push(`-I ${jump.chain} 1 ${jump.rule}`);
      inserts.set(jump.chain, chainInserts);
    }
    const next = new Map(current);
    next.set(jump.rule, 1);
    after.set(jump.chain, next);
  }
  // Each insert goes to position 1: insert a chain's last jump first, so that its jumps end
  // up in spec order.
  const inserted = [...inserts.values()].flatMap((lines) => lines.reverse());

  return { lines: [...declares, ...deletes, ...appends, ...jumpDeletes, ...inserted], after };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
