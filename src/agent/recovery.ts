// Where the agent's bindings come from at start, and what it does when they are lost.
//
// - Saved bindings that load: restored (--recover-from-kernel is then ignored).
// - A state file that cannot be read or parsed, or a journal without its snapshot
//   (store.ts): the agent refuses to start (exit 1) with the reason; the kernel is never
//   flushed because state is missing. --recover-from-kernel instead sets the files aside
//   (`<name>.lost-<time>`) and rebuilds the bindings from the kernel's NAT rules.
// - No state file at all: the seed's state files are adopted, if any (an upgrade). Else,
//   when our NAT chains hold rules, --state-dir was wiped on a node that holds bindings:
//   starting empty would remove every EIP of the node, so the agent refuses to start,
//   unless --recover-from-kernel. With no rule of ours either, the node is fresh.
//
// The kernel's NAT rules are the one record of the bindings outside --state-dir: each
// binding is a DNAT rule in KUBE-EIP-PREROUTING (`-d EIP/32 -j DNAT --to-destination VMI`)
// and an SNAT rule in KUBE-EIP-POSTROUTING (`-s VMI/32 ... -j SNAT --to-source EIP`), in
// exactly the form plan.ts writes (iptables-save prints them so). A pair with both rules is
// a binding; a rule without its partner (an apply cut short) or an EIP or VMI in two pairs
// is skipped and logged, since it cannot be told which binding was acknowledged.
//
// With --dataplane nftables the record is our table's maps instead: an entry EIP : VMI of
// eip_vmi with its partner VMI : EIP in vmi_eip is a binding, with the same rules for the
// others. The agent reads its own dataplane, and the other one when its own holds nothing
// (a node switched dataplanes and lost --state-dir).
//
// Reads `iptables-<mode>-save -t nat` or `nft -j list table ip kube_eip`; writes nothing
// (the caller saves the table).
import type { Logger } from "pino";
import { canonicalIpv4 } from "../common/ipv4.js";
import { parseIptablesSave, type IptablesMode } from "../kernel/iptables.js";
import { IPV4, parseTable } from "../kernel/nftables-table.js";
import type { CommandRunner } from "../kernel/runner.js";
import { BindingTable, type HeldBinding } from "./binding-table.js";
import { CHAIN_POSTROUTING, CHAIN_PREROUTING, type Binding, NFT_TABLE } from "../model/desired.js";
import { snatRule } from "../model/plan.js";
import { scanSeedState } from "./seed-state.js";
import { type BindingStore, StateError } from "./store.js";

export interface NatBindings {
  readonly bindings: Binding[];
  readonly skipped: { readonly rule: string; readonly reason: string }[];
  /** How many rules our two NAT chains hold (0: the kernel holds no binding of ours). */
  readonly rules: number;
}

const DNAT = /^-d (\S+)\/32 -j DNAT --to-destination (\S+)$/;

/** The bindings our NAT chains hold, from `iptables-save -t nat` output. */
export function bindingsFromNat(saveText: string): NatBindings {
  const nat = parseIptablesSave(saveText, "nat", new Set([CHAIN_PREROUTING, CHAIN_POSTROUTING]));
  const dnat = nat.rules.get(CHAIN_PREROUTING) ?? new Map<string, number>();
  const snat = new Map(nat.rules.get(CHAIN_POSTROUTING) ?? []);
  const rules = [...dnat.values(), ...snat.values()].reduce((a, b) => a + b, 0);
  const skipped: { rule: string; reason: string }[] = [];
  const pairs: Binding[] = [];
  for (const rule of dnat.keys()) {
    const match = DNAT.exec(rule);
    const eip = canonicalIpv4(match?.[1] ?? "");
    const vmi = canonicalIpv4(match?.[2] ?? "");
    if (eip === undefined || vmi === undefined) {
      skipped.push({
        rule: `-A ${CHAIN_PREROUTING} ${rule}`,
        reason: "not a rule kube-eip writes",
      });
      continue;
    }
    const binding = { eip, vmi };
    const partner = snatRule(binding);
    if (!snat.delete(partner)) {
      skipped.push({ rule: `-A ${CHAIN_PREROUTING} ${rule}`, reason: "no SNAT rule to match" });
      continue;
    }
    pairs.push(binding);
  }
  for (const rule of snat.keys()) {
    skipped.push({ rule: `-A ${CHAIN_POSTROUTING} ${rule}`, reason: "no DNAT rule to match" });
  }
  return { bindings: unique(pairs, skipped), skipped, rules };
}

/** The pairs whose EIP and VMI are in no other pair; the others are skipped. */
function unique(pairs: readonly Binding[], skipped: { rule: string; reason: string }[]): Binding[] {
  const count = (key: (b: Binding) => string) => {
    const n = new Map<string, number>();
    for (const b of pairs) n.set(key(b), (n.get(key(b)) ?? 0) + 1);
    return n;
  };
  const eips = count((b) => b.eip);
  const vmis = count((b) => b.vmi);
  const bindings: Binding[] = [];
  for (const b of pairs) {
    if ((eips.get(b.eip) ?? 0) > 1 || (vmis.get(b.vmi) ?? 0) > 1) {
      skipped.push({ rule: `${b.eip} -> ${b.vmi}`, reason: "its EIP or VMI is in another pair" });
    } else {
      bindings.push(b);
    }
  }
  return bindings;
}

/** Reads our NAT chains from the kernel. */
export async function readNatBindings(
  runner: CommandRunner,
  mode: IptablesMode,
): Promise<NatBindings> {
  const { stdout } = await runner.run(`iptables-${mode}-save`, ["-t", "nat"]);
  return bindingsFromNat(stdout);
}

/** The bindings our nftables maps hold, from `nft -j list table ip kube_eip` output. */
export function bindingsFromNft(json: string): NatBindings {
  const { elements } = parseTable(IPV4, json);
  const reverse = new Set(elements.vmi_eip);
  const skipped: { rule: string; reason: string }[] = [];
  const pairs: Binding[] = [];
  for (const element of elements.eip_vmi) {
    const [eip = "", vmi = ""] = element.split(" : ");
    if (!reverse.delete(`${vmi} : ${eip}`)) {
      skipped.push({ rule: `eip_vmi ${element}`, reason: "no vmi_eip element to match" });
    } else {
      pairs.push({ eip, vmi });
    }
  }
  for (const element of reverse) {
    skipped.push({ rule: `vmi_eip ${element}`, reason: "no eip_vmi element to match" });
  }
  const rules = elements.eip_vmi.length + elements.vmi_eip.length;
  return { bindings: unique(pairs, skipped), skipped, rules };
}

/** Reads the bindings of a dataplane; the other one's when it holds none. */
export async function readKernelBindings(
  runner: CommandRunner,
  dataplane: "iptables" | "nftables",
  mode: IptablesMode,
): Promise<NatBindings> {
  const nft = () =>
    runner.run("nft", ["-j", "list", "table", "ip", NFT_TABLE]).then(
      (r) => bindingsFromNft(r.stdout),
      () => ({ bindings: [], skipped: [], rules: 0 }),
    );
  const readers = [() => readNatBindings(runner, mode), nft];
  if (dataplane === "nftables") readers.reverse();
  const [first, second] = readers as [() => Promise<NatBindings>, () => Promise<NatBindings>];
  const own = await first();
  return own.rules > 0 ? own : second();
}

const RECOVER_HINT =
  "restore the state files, or start once with --recover-from-kernel to rebuild the bindings from the kernel's NAT rules";

/** The node's bindings at start (see the header). Throws StateError when it must not start. */
export async function loadBindings(
  config: { readonly recoverFromKernel: boolean; readonly seedStateDir: string },
  store: BindingStore,
  logger: Logger,
  readNat: () => Promise<NatBindings>,
): Promise<BindingTable> {
  let saved: HeldBinding[] | undefined;
  try {
    saved = await store.load();
  } catch (err) {
    if (!(err instanceof StateError)) throw err;
    if (!config.recoverFromKernel) {
      throw new StateError(`${err.message}; refusing to start: ${RECOVER_HINT}`, { cause: err });
    }
    logger.warn({ err: err.message }, "saved bindings unreadable: recovering them from the kernel");
    return recover(await readNat(), store, logger);
  }
  if (saved) {
    logger.info({ bindings: saved.length, path: store.path }, "restoring saved bindings");
    if (config.recoverFromKernel) {
      logger.info({}, "the saved bindings are intact: --recover-from-kernel has nothing to do");
    }
    return new BindingTable(saved);
  }
  const seed = await scanSeedState(config.seedStateDir);
  for (const s of seed.skipped)
    logger.warn({ file: s.file, reason: s.reason }, "seed state file not adopted");
  const now = new Date().toISOString();
  if (seed.adopted.length > 0) {
    logger.info(
      { bindings: seed.adopted.length, dir: config.seedStateDir },
      "adopting the seed agent's bindings",
    );
    return new BindingTable(seed.adopted.map((b) => ({ ...b, since: now })));
  }
  const nat = await readNat();
  if (nat.rules === 0) return new BindingTable();
  if (!config.recoverFromKernel) {
    throw new StateError(
      `${store.dir} holds no saved bindings, but the kernel's NAT chains hold ${nat.rules} rules of kube-eip (${nat.bindings.length} bindings); refusing to start, which would remove them: ${RECOVER_HINT}`,
    );
  }
  return recover(nat, store, logger);
}

async function recover(
  nat: NatBindings,
  store: BindingStore,
  logger: Logger,
): Promise<BindingTable> {
  const since = new Date().toISOString();
  const setAside = await store.setAside(since.replace(/[:.]/g, "-"));
  for (const s of nat.skipped)
    logger.warn({ rule: s.rule, reason: s.reason }, "NAT rule not recovered");
  logger.info(
    { bindings: nat.bindings.length, skipped: nat.skipped.length, setAside },
    "bindings recovered from the kernel's NAT rules",
  );
  return new BindingTable(nat.bindings.map((b) => ({ ...b, since })));
}
