// IptablesLeftovers: with --dataplane nftables, what the iptables dataplane leaves behind
// goes: our chains (KUBE-EIP-PREROUTING, -POSTROUTING, -FORWARD, -HAIRPIN, -TX) and our
// ipsets (k8s_internal_net, kube-eip-eip, kube-eip-vmi, kube-eip-traffic). Provably ours:
// the seed's names and ours, which nothing else writes (COMPATIBILITY.md).
//
// It runs after the IptablesManager, which deletes our jumps into those chains (they are its
// retired jumps in this mode), and after the nftables table is written, so the EIP traffic
// is served by one dataplane or both at every moment of a switch, never by none.
//
// How it reads: `<backend>-save -t nat`, `-t filter` and `-t mangle` (which of our chains exist) and
// `ipset list -n` (which of our sets exist; no ipset installed means none).
// How it writes: one `<backend>-restore --noflush` with `-F` and `-X` of each chain of ours
// that exists, then `ipset destroy` of each set of ours that exists (a set is only free once
// no rule names it). A set that someone else's rule still names is emptied instead (`ipset
// flush`, unless `ipset list -terse` counts no entries) and left; a re-read tries again. A
// chain that someone else still uses fails the apply with the kernel's reason.
import {
  CHAIN_FORWARD,
  CHAIN_HAIRPIN,
  CHAIN_POSTROUTING,
  CHAIN_PREROUTING,
  CHAIN_TX,
  type IptablesTable,
  SET_EIP,
  SET_INTERNAL,
  SET_TRAFFIC,
  SET_VMI,
} from "../model/desired.js";
import { type IptablesMode, parseIptablesSave } from "./iptables.js";
import { KernelError, Phase } from "./manager.js";
import type { CommandRunner } from "./runner.js";
import type { Subsystem } from "./subsystem.js";

const CHAINS: readonly { table: IptablesTable; chain: string }[] = [
  { table: "nat", chain: CHAIN_PREROUTING },
  { table: "nat", chain: CHAIN_POSTROUTING },
  { table: "filter", chain: CHAIN_FORWARD },
  { table: "nat", chain: CHAIN_HAIRPIN },
  { table: "mangle", chain: CHAIN_TX },
];
const SETS = [SET_INTERNAL, SET_EIP, SET_VMI, SET_TRAFFIC];
const TABLES = ["nat", "filter", "mangle"] as const;

export interface Leftovers {
  readonly chains: readonly { table: IptablesTable; chain: string }[];
  readonly sets: readonly string[];
}

export class IptablesLeftovers {
  /** What is believed to be left; undefined: unknown (read first). */
  private belief: Leftovers | undefined;

  constructor(
    private readonly runner: CommandRunner,
    private readonly mode: IptablesMode,
  ) {}

  async read(): Promise<Leftovers> {
    const [nat, filter, mangle, sets] = await Promise.all([
      this.save("nat"),
      this.save("filter"),
      this.save("mangle"),
      this.runner.run("ipset", ["list", "-n"]).then(
        (r): string[] => r.stdout.split("\n"),
        (err: unknown): string[] => {
          if (isMissing(err)) return [];
          throw asKernelError(err, Phase.Ipset);
        },
      ),
    ]);
    const declared = { nat, filter, mangle };
    return {
      chains: CHAINS.filter((c) => declared[c.table].has(c.chain)),
      sets: SETS.filter((s) => sets.includes(s)),
    };
  }

  adopt(snapshot: Leftovers): void {
    this.belief = snapshot;
  }

  async sync(options: { reread: boolean }): Promise<number> {
    try {
      if (options.reread || this.belief === undefined) this.belief = await this.read();
      const { chains, sets } = this.belief;
      if (chains.length === 0 && sets.length === 0) return 0;
      this.belief = undefined;
      if (chains.length > 0) {
        const input = TABLES.map((table) => {
          const ours = chains.filter((c) => c.table === table);
          if (ours.length === 0) return "";
          const lines = ours.flatMap((c) => [`-F ${c.chain}`, `-X ${c.chain}`]);
          return `*${table}\n${lines.join("\n")}\nCOMMIT\n`;
        }).join("");
        await this.runner
          .run(`iptables-${this.mode}-restore`, ["--noflush", "-w", "5"], { input })
          .catch((err: unknown) => Promise.reject(asKernelError(err, Phase.Nat)));
      }
      let written = chains.length;
      for (const set of sets) {
        written += await this.destroy(set);
      }
      this.belief = { chains: [], sets: [] };
      return written;
    } catch (err) {
      this.belief = undefined;
      throw err instanceof KernelError ? err : asKernelError(err, Phase.Nat);
    }
  }

  /**
   * Destroys our set; one that a rule of someone else's still names (a site's FORWARD rule
   * matching kube-eip-vmi, as on the seed's nodes) cannot go: it is emptied instead, so the
   * rule matches nothing rather than addresses this dataplane no longer binds, and destroyed
   * at a later re-read once the rule is gone. Resolves to the changes written.
   */
  private async destroy(set: string): Promise<number> {
    try {
      await this.runner.run("ipset", ["destroy", set]);
      return 1;
    } catch (err) {
      if (!isInUse(err)) throw asKernelError(err, Phase.Ipset);
    }
    const members = await this.runner
      .run("ipset", ["list", set, "-terse", "-output", "plain"])
      .then((r) => /^Number of entries: (\d+)$/m.exec(r.stdout)?.[1])
      .catch((err: unknown) => Promise.reject(asKernelError(err, Phase.Ipset)));
    if (members === "0") return 0;
    await this.runner
      .run("ipset", ["flush", set])
      .catch((err: unknown) => Promise.reject(asKernelError(err, Phase.Ipset)));
    return 1;
  }

  private async save(table: IptablesTable): Promise<Set<string>> {
    const command = `iptables-${this.mode}-save`;
    try {
      const { stdout } = await this.runner.run(command, ["-t", table]);
      return parseIptablesSave(stdout, table, new Set()).chains;
    } catch (err) {
      throw asKernelError(err, Phase.Nat);
    }
  }
}

/** The subsystem: owns nothing, removes what the iptables dataplane left. */
export function leftoversSubsystem(leftovers: IptablesLeftovers): Subsystem {
  return {
    name: "iptables-leftovers",
    owns: "nothing: removes the iptables dataplane's chains and ipsets",
    stage: "kernel",
    sync: (_desired, options) => leftovers.sync(options),
    read: () => leftovers.read(),
    adopt: (snapshot) => leftovers.adopt(snapshot as Leftovers),
  };
}

function isMissing(err: unknown): boolean {
  if (typeof err === "object" && err !== null && (err as { code?: unknown }).code === "ENOENT") {
    return true;
  }
  const stderr = (err as { stderr?: unknown } | null)?.stderr;
  return typeof stderr === "string" && /exec of "ipset" failed/.test(stderr);
}

function isInUse(err: unknown): boolean {
  const stderr = (err as { stderr?: unknown } | null)?.stderr;
  return typeof stderr === "string" && /in use by a kernel component/.test(stderr);
}

function asKernelError(err: unknown, phase: Phase): KernelError {
  if (err instanceof KernelError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new KernelError(phase, `iptables dataplane leftovers: ${message}`, { cause: err });
}
