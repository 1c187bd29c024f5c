// Which iptables backend (legacy or nft) the node uses, and whether the other one can drop
// EIP traffic. Read-only: it runs the four save commands, without `-t` (a legacy tool given
// `-t` creates the table), and never writes.
//
// Both backends hook the same packets: a node whose firewall is in one and whose EIP rules
// are in the other drops the EIP traffic wherever either says so. So the backend to write
// to is the one the node's firewall lives in, and whatever the other one holds that may
// drop forwarded traffic is reported (a log warning at start and a metric).
import type { IptablesMode } from "./iptables.js";
import type { CommandRunner } from "./runner.js";

/** The chain names kubelet (1.17+) creates; their presence tells which backend it uses. */
const KUBELET_HINT_CHAINS = new Set(["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"]);

/** Built-in chains a forwarded packet (EIP traffic, both ways) passes, per table. */
const FORWARD_PATH: Readonly<Record<string, readonly string[]>> = {
  raw: ["PREROUTING"],
  mangle: ["PREROUTING", "FORWARD", "POSTROUTING"],
  nat: ["PREROUTING", "POSTROUTING"],
  filter: ["FORWARD"],
  security: ["FORWARD"],
};

const DROPPING_TARGETS = new Set(["DROP", "REJECT"]);

/** One table of an iptables-save dump: chain policies ("-" for user chains) and rules. */
interface DumpTable {
  readonly policies: Map<string, string>;
  readonly rules: Map<string, string[]>;
}

/** Every table of a whole iptables-save dump. */
export function parseDump(text: string): Map<string, DumpTable> {
  const tables = new Map<string, DumpTable>();
  let current: DumpTable | undefined;
  for (const line of text.split("\n")) {
    if (line.startsWith("*")) {
      current = { policies: new Map(), rules: new Map() };
      tables.set(line.slice(1).trim(), current);
    } else if (current === undefined) {
      continue;
    } else if (line.startsWith(":")) {
      const [name = "", policy = "-"] = line.slice(1).split(" ");
      current.policies.set(name, policy);
    } else if (line.startsWith("-A ")) {
      const [, chain = "", ...rest] = line.split(" ");
      const rules = current.rules.get(chain) ?? [];
      rules.push(rest.join(" "));
      current.rules.set(chain, rules);
    } else if (line.startsWith("COMMIT")) {
      current = undefined;
    }
  }
  return tables;
}

/**
 * How much a dump shows its backend in use: its rules, its user-defined chains and its
 * built-in chains whose policy is not ACCEPT. A host whose only firewall is
 * `iptables-legacy -P FORWARD DROP` has no rule at all, yet uses legacy.
 */
export function backendSigns(text: string): number {
  let signs = 0;
  for (const table of parseDump(text).values()) {
    for (const policy of table.policies.values()) if (policy !== "ACCEPT") signs++;
    for (const rules of table.rules.values()) signs += rules.length;
  }
  return signs;
}

function hasKubeletHint(text: string): boolean {
  for (const table of parseDump(text).values()) {
    for (const chain of table.policies.keys()) if (KUBELET_HINT_CHAINS.has(chain)) return true;
  }
  return false;
}

/** The target of a rule spec (`-j X` or `-g X`), if any. */
function targetOf(rule: string): string | undefined {
  const words = rule.split(" ");
  for (let i = words.length - 2; i >= 0; i--) {
    if (words[i] === "-j" || words[i] === "-g") return words[i + 1];
  }
  return undefined;
}

/**
 * What in a dump may drop forwarded traffic: a policy other than ACCEPT on a built-in chain
 * a forwarded packet passes, and each DROP or REJECT rule reachable from one (through jumps
 * and gotos into user chains). Each as a short description, e.g. "filter FORWARD policy DROP".
 */
export function forwardDrops(text: string): string[] {
  const found: string[] = [];
  for (const [name, table] of parseDump(text)) {
    const starts = FORWARD_PATH[name] ?? [];
    const seen = new Set<string>();
    const queue: string[] = [];
    for (const chain of starts) {
      const policy = table.policies.get(chain);
      if (policy !== undefined && policy !== "ACCEPT" && policy !== "-") {
        found.push(`${name} ${chain} policy ${policy}`);
      }
      queue.push(chain);
    }
    for (let chain = queue.shift(); chain !== undefined; chain = queue.shift()) {
      if (seen.has(chain)) continue;
      seen.add(chain);
      for (const rule of table.rules.get(chain) ?? []) {
        const target = targetOf(rule);
        if (target === undefined) continue;
        if (DROPPING_TARGETS.has(target)) found.push(`${name} ${chain}: ${rule}`);
        else if (table.policies.get(target) === "-") queue.push(target);
      }
    }
  }
  return found;
}

export interface BackendInspection {
  readonly mode: IptablesMode;
  /** What the backend not used holds that may drop EIP traffic (forwardDrops). */
  readonly otherDrops: readonly string[];
}

/**
 * Decides the backend as kubernetes-sigs/iptables-wrappers does, counting policies and
 * user chains too: a backend holding kubelet's hint chains wins (legacy checked first);
 * otherwise the one with more signs of use (backendSigns, iptables + ip6tables), a tie
 * going to nft. With `requested`, that backend is used. A save that fails counts as empty.
 */
export async function inspectIptablesBackends(
  runner: CommandRunner,
  requested: IptablesMode | "auto",
): Promise<BackendInspection> {
  const save = async (command: string): Promise<string> => {
    try {
      return (await runner.run(command, [])).stdout;
    } catch {
      return "";
    }
  };
  const [legacy, nft] = await Promise.all([
    save("iptables-legacy-save"),
    save("iptables-nft-save"),
  ]);
  const mode = requested === "auto" ? await pick(legacy, nft, save) : requested;
  return { mode, otherDrops: forwardDrops(mode === "nft" ? legacy : nft) };
}

async function pick(
  legacy: string,
  nft: string,
  save: (command: string) => Promise<string>,
): Promise<IptablesMode> {
  if (hasKubeletHint(legacy)) return "legacy";
  if (hasKubeletHint(nft)) return "nft";
  const [legacy6, nft6] = await Promise.all([
    save("ip6tables-legacy-save"),
    save("ip6tables-nft-save"),
  ]);
  const legacySigns = backendSigns(legacy) + backendSigns(legacy6);
  const nftSigns = backendSigns(nft) + backendSigns(nft6);
  return legacySigns > nftSigns ? "legacy" : "nft";
}
