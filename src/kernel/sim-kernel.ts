// SimKernel: a CommandRunner that plays the node's kernel for property tests. It keeps a
// small model of ipsets, iptables (nat, filter and mangle), iproute2 state (sim-iproute.ts) and
// sysctls, answers the reads the managers make from that model and applies their writes to
// it, all-or-nothing per iptables table as the real tools do. It is strict: a command, a
// line or an argument outside the grammar the managers are meant to write is recorded as a
// violation (and fails like the real tool would), and so is any deletion or rewrite of
// state that was there before the agent started (the "foreign" state a test seeds). A
// property test asserts `violations` stays empty.
import type { RecordedCall } from "./fake-runner.js";
import { CommandError, type CommandRunner, type RunResult } from "./runner.js";
import { GrammarError, SimError, SimIproute, type SimWatcher } from "./sim-iproute.js";

export interface SimSet {
  readonly type: string;
  readonly options: string;
  readonly members: Set<string>;
  readonly foreign: boolean;
}

export interface SimRule {
  readonly spec: string;
  readonly foreign: boolean;
}

export interface SimChain {
  readonly builtin: boolean;
  policy: string;
  rules: SimRule[];
  readonly foreign: boolean;
}

export type SimTable = Map<string, SimChain>;

const BUILTIN: Record<string, readonly string[]> = {
  nat: ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
  filter: ["INPUT", "FORWARD", "OUTPUT"],
  mangle: ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
};
const TARGETS = new Set(["ACCEPT", "DROP", "RETURN", "DNAT", "SNAT", "MASQUERADE", "REJECT"]);
/** One token of a rule spec: options, names, addresses; a quoted comment of plain words. */
const RULE_TOKEN = /^(?:[\w./:!,-]+|"[\w .:/,-]*")$/;
const SET_NAME = /^[\w.:-]{1,31}$/;
/** The tools whose calls only read. */
const READS = [/^ip (?!.*-batch)/, /^ipset save/, /-save( |$)/, /^sysctl -n /];

export class SimKernel implements CommandRunner, SimWatcher {
  readonly calls: RecordedCall[] = [];
  readonly violations: string[] = [];
  readonly ip = new SimIproute(this);
  readonly sets = new Map<string, SimSet>();
  readonly tables = new Map<string, SimTable>();
  readonly sysctls = new Map<string, string>();
  /** Addresses no write may ever add to any device (the gateway's, the node's). */
  readonly neverAdd = new Set<string>();
  /** Backends that hold tables (the others print nothing). */
  mode: "nft" | "legacy" = "nft";

  constructor() {
    this.ip.promoteSecondaries = (dev) =>
      this.sysctls.get(`net/ipv4/conf/${dev}/promote_secondaries`) === "1";
    for (const [name, chains] of Object.entries(BUILTIN)) {
      const table: SimTable = new Map();
      for (const c of chains)
        table.set(c, { builtin: true, policy: "ACCEPT", rules: [], foreign: true });
      this.tables.set(name, table);
    }
  }

  violation(reason: string): void {
    this.violations.push(reason);
  }

  addressAdded(address: string): void {
    if (this.neverAdd.has(address)) this.violation(`added the protected address ${address}`);
  }

  /** The calls that changed something (or tried to). */
  writes(): RecordedCall[] {
    return this.calls.filter((c) => !READS.some((r) => r.test(line(c))));
  }

  run(command: string, args: readonly string[], options?: { input?: string }): Promise<RunResult> {
    const call: RecordedCall = { command, args: [...args], input: options?.input };
    this.calls.push(call);
    for (const a of args) {
      if (/[\s\0]/.test(a) || a.length > 256) this.violation(`bad argument ${JSON.stringify(a)}`);
    }
    try {
      return Promise.resolve({ stdout: this.dispatch(call), stderr: "" });
    } catch (err) {
      if (!(err instanceof SimError)) throw err;
      if (err instanceof GrammarError) this.violation(`${line(call)}: ${err.message}`);
      return Promise.reject(new CommandError(command, args, 1, err.message));
    }
  }

  private dispatch(call: RecordedCall): string {
    const { command, args } = call;
    const input = call.input ?? "";
    if (command === "ip") return this.runIp(args, input);
    if (command === "ipset") {
      if (args.join(" ") === "save") return this.ipsetSave();
      // One set: what the traffic counters read (a simulated set counts nothing).
      if (args.length === 2 && args[0] === "save") {
        if (!this.sets.has(args[1] as string)) {
          throw new SimError("ipset v7.17: The set with the given name does not exist");
        }
        return this.ipsetSave(args[1]);
      }
      if (args.join(" ") === "restore") return this.ipsetRestore(input);
    }
    const tool = /^ip(6?)tables-(nft|legacy)-(save|restore)$/.exec(command);
    if (tool) {
      const visible = tool[1] === "" && tool[2] === this.mode;
      if (tool[3] === "save") {
        if (args.length === 0) return visible ? this.iptablesSave(["nat", "filter"]) : "";
        if (args.length === 2 && args[0] === "-t" && BUILTIN[args[1] as string]) {
          return visible ? this.iptablesSave([args[1] as string]) : "";
        }
      } else if (visible && args.join(" ") === "--noflush -w 5") {
        this.iptablesRestore(input);
        return "";
      }
    }
    if (command === "sysctl") return this.sysctl(args);
    // The iptables dataplane looks for our nftables table (to delete it): there is none.
    if (command === "nft" && args.join(" ") === "-j list table ip kube_eip") {
      throw new SimError("Error: No such file or directory\nlist table ip kube_eip\n");
    }
    if (command === "conntrack" && args.length === 3 && args[0] === "-D") return "";
    if (command === "arp-scan") return "";
    throw new GrammarError(`unexpected command`);
  }

  private runIp(args: readonly string[], input: string): string {
    const rest = [...args];
    const flags = new Set<string>();
    while (rest[0]?.startsWith("-") && rest[0] !== "-") flags.add(rest.shift() as string);
    if (flags.has("-batch")) {
      if (rest.join(" ") !== "-" || !flags.has("-force"))
        throw new GrammarError("batch from stdin with -force expected");
      return this.ipBatch(input);
    }
    const words = rest.join(" ");
    let m: RegExpExecArray | null;
    if ((m = /^link show dev (\S+)$/.exec(words))) {
      if (!this.ip.links.has(m[1] as string))
        throw new SimError(`Device "${m[1]}" does not exist.`);
      return `1: ${m[1]}: <UP> mtu 1500\n`;
    }
    if (!flags.has("-json")) throw new GrammarError("reads are expected as -json");
    if ((m = /^addr(?:ess)? show(?: dev (\S+))?$/.exec(words))) return this.ip.showAddresses(m[1]);
    if ((m = /^route show table (\S+)(?: proto (\S+))?$/.exec(words))) {
      return this.ip.showRoutes(m[1] as string, m[2]);
    }
    if (words === "rule show") return this.ip.showRules();
    if ((m = /^neigh show proxy(?: dev (\S+))?$/.exec(words))) return this.ip.showProxies(m[1]);
    throw new GrammarError("unexpected ip read");
  }

  private ipBatch(input: string): string {
    const errors: string[] = [];
    input.split("\n").forEach((text, i) => {
      if (text.trim() === "") return;
      try {
        this.ip.line(text);
      } catch (err) {
        if (err instanceof GrammarError) throw err; // ip stops at a line it cannot parse
        if (!(err instanceof SimError)) throw err;
        errors.push(`${err.message}\nCommand failed -:${i + 1}`);
      }
    });
    if (errors.length > 0) throw new SimError(errors.join("\n"));
    return "";
  }

  private ipsetSave(only?: string): string {
    const out: string[] = [];
    for (const [name, set] of this.sets) {
      if (only !== undefined && name !== only) continue;
      out.push(`create ${name} ${set.type} ${set.options}`);
      for (const m of set.members) out.push(`add ${name} ${m}`);
    }
    return out.map((l) => `${l}\n`).join("");
  }

  private ipsetRestore(input: string): string {
    for (const text of input.split("\n")) {
      if (text === "") continue;
      const [verb, name, ...rest] = text.split(" ");
      if (name === undefined || !SET_NAME.test(name)) throw new GrammarError(`bad set in ${text}`);
      if (rest.at(-1) !== "-exist") throw new GrammarError(`-exist expected in ${text}`);
      const set = this.sets.get(name);
      if (verb === "create") {
        if (set) continue;
        const [type, ...options] = rest.slice(0, -1);
        if (type !== "hash:ip" && type !== "hash:net")
          throw new GrammarError(`bad type in ${text}`);
        this.sets.set(name, {
          type,
          options: options.join(" "),
          members: new Set(),
          foreign: false,
        });
        continue;
      }
      if (verb !== "add" && verb !== "del") throw new GrammarError(`bad verb in ${text}`);
      if (rest.length !== 2) throw new GrammarError(`one member expected in ${text}`);
      if (!set) throw new SimError(`The set with the given name does not exist: ${name}`);
      if (set.foreign) this.violation(`changed the foreign set ${name}: ${text}`);
      const member = rest[0] as string;
      if (!/^[\d.]+(\/\d+)?$/.test(member)) throw new GrammarError(`bad member in ${text}`);
      if (verb === "add") set.members.add(member);
      else set.members.delete(member);
    }
    return "";
  }

  private iptablesSave(names: readonly string[]): string {
    const out = ["# Generated by iptables-nft-save v1.8.9 (simulated)"];
    for (const name of names) {
      const table = this.tables.get(name) as SimTable;
      out.push(`*${name}`);
      for (const [chain, c] of table) out.push(`:${chain} ${c.builtin ? c.policy : "-"} [0:0]`);
      for (const [chain, c] of table) for (const r of c.rules) out.push(`-A ${chain} ${r.spec}`);
      out.push("COMMIT");
    }
    return out.map((l) => `${l}\n`).join("");
  }

  /** Applies one restore; a table's section takes effect whole at COMMIT, or not at all. */
  private iptablesRestore(input: string): void {
    let name: string | undefined;
    let work: SimTable | undefined;
    const found: string[] = [];
    for (const text of input.split("\n")) {
      if (text === "" || text.startsWith("#")) continue;
      if (text.startsWith("*")) {
        name = text.slice(1);
        const table = this.tables.get(name);
        if (!table || work) throw new GrammarError(`bad table line ${text}`);
        work = cloneTable(table);
        continue;
      }
      if (!work || name === undefined) throw new GrammarError(`line outside a table: ${text}`);
      if (text === "COMMIT") {
        this.tables.set(name, work);
        work = undefined;
        continue;
      }
      this.restoreLine(work, text, found, name);
    }
    if (work) throw new GrammarError("restore input ends without COMMIT");
    for (const v of found) this.violation(v);
  }

  private restoreLine(table: SimTable, text: string, found: string[], name: string): void {
    const declare = /^:(\S+) (\S+) \[0:0\]$/.exec(text);
    if (declare) {
      const chain = table.get(declare[1] as string);
      if (chain?.builtin) throw new GrammarError(`declared a built-in chain: ${text}`);
      if (chain?.foreign) found.push(`flushed the foreign chain ${declare[1]}`);
      if (chain) chain.rules = [];
      else
        table.set(declare[1] as string, { builtin: false, policy: "-", rules: [], foreign: false });
      return;
    }
    const m = /^-([ADI]) (\S+) (.*)$/.exec(text);
    if (!m) throw new GrammarError(`unexpected restore line ${text}`);
    const [, op, chainName, tail] = m as unknown as [string, string, string, string];
    const chain = table.get(chainName);
    if (!chain) throw new SimError(`Chain '${chainName}' does not exist`);
    let spec = tail;
    let at = op === "I" ? 0 : chain.rules.length;
    if (op === "I") {
      const n = /^(\d+) (.*)$/.exec(tail);
      if (!n) throw new GrammarError(`-I without a position: ${text}`);
      at = Number(n[1]) - 1;
      spec = n[2] as string;
    }
    const tokens = spec.match(/"[^"]*"|\S+/g) ?? [];
    if (!tokens.every((t) => RULE_TOKEN.test(t))) throw new GrammarError(`bad rule ${text}`);
    const target = /(?:^| )-j (\S+)/.exec(spec)?.[1];
    // In mangle, a rule without a target only counts (our traffic counters).
    if (target === undefined && name !== "mangle") {
      throw new GrammarError(`rule without a target: ${text}`);
    }
    if (target !== undefined && !TARGETS.has(target) && !table.has(target)) {
      throw new SimError(`Couldn't load target \`${target}'`);
    }
    if (op === "D") {
      const i = chain.rules.findIndex((r) => r.spec === spec);
      if (i === -1) throw new SimError(`Bad rule (does a matching rule exist in that chain?)`);
      if (chain.rules[i]?.foreign) found.push(`deleted the foreign rule -A ${chainName} ${spec}`);
      chain.rules.splice(i, 1);
      return;
    }
    if (chain.foreign && !chain.builtin) found.push(`wrote into the foreign chain ${chainName}`);
    chain.rules.splice(at, 0, { spec, foreign: false });
  }

  private sysctl(args: readonly string[]): string {
    const [flag, ...rest] = args;
    const key = /^[a-z0-9_]+(\/[\w.:@-]+)+$/;
    if (flag === "-n" && rest.length > 0 && rest.every((k) => key.test(k))) {
      return rest.map((k) => `${this.sysctls.get(k) ?? "0"}\n`).join("");
    }
    if (flag === "-w" && rest.length > 0) {
      for (const kv of rest) {
        const [k = "", v, extra] = kv.split("=");
        if (!key.test(k) || v === undefined || extra !== undefined || !/^\d+$/.test(v)) {
          throw new GrammarError(`bad setting ${kv}`);
        }
        this.sysctls.set(k, v);
      }
      return "";
    }
    throw new GrammarError("unexpected sysctl call");
  }
}

function cloneTable(table: SimTable): SimTable {
  const copy: SimTable = new Map();
  for (const [name, c] of table) copy.set(name, { ...c, rules: [...c.rules] });
  return copy;
}

function line(call: { command: string; args: readonly string[] }): string {
  return [call.command, ...call.args].join(" ");
}
