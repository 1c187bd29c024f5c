// What each binding's dataplane really does, from the last read-back (readback.ts): pure.
//
// Programmed: the kernel holds the binding's NAT, policy route and address or ARP answer,
// as read back, not as last written:
// - False NotWritten: saved, but the apply that writes it failed (the loop retries);
// - Unknown NotReadBack: written, not read back yet (a read-back follows every apply that
//   changed the bindings, so this lasts the time of one read);
// - False Missing: the last read-back lacked something of it (or something every binding
//   needs: a jump, a chain, our nftables table, a route of table 1001, a setting); the loop
//   repaired it at once, and the binding stays False until a later read-back finds it whole:
//   something outside the agent removed our state and may do it again;
// - True ReadBack.
// Announced: the network has been told. With BGP: at least one established peer has been
// sent the route (the peer's Adj-RIB-Out in gobgpd holds EIP/32); with ARP: the gateway
// device answers ARP for the EIP (its address, or its proxy entry and host route, read back).
import type { Binding } from "../model/desired.js";
import type { Missing } from "../kernel/readback-checks.js";

export type ConditionStatus = "True" | "False" | "Unknown";

export interface BindingCondition {
  readonly status: ConditionStatus;
  readonly reason: string;
  readonly message: string;
}

/** One read-back of the kernel, attributed to the bindings it covered. */
export interface Findings {
  /** When it was read (ISO 8601). */
  readonly at: string;
  /** The bindings held when it was read: EIP -> VMI. */
  readonly covered: ReadonlyMap<string, string>;
  /** What each binding lacked (only the bindings that lacked something). */
  readonly missing: ReadonlyMap<string, readonly Missing[]>;
  /** What every binding needs and was missing. */
  readonly shared: readonly Missing[];
  /** When the loop rewrote what was missing, or why it could not. */
  repairedAt?: string;
  repairError?: string;
}

/** What the BGP speaker said when last asked. */
export type BgpView =
  | { readonly at: string; readonly error: string }
  | {
      readonly at: string;
      readonly peers: readonly { readonly address: string; readonly state: string }[];
      /** Established peers -> the EIPs their Adj-RIB-Out holds. */
      readonly sent: ReadonlyMap<string, ReadonlySet<string>>;
    };

const ADDRESS = /\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}/g;

/** Attributes missing items to the bindings whose EIP or VMI they name; the rest is shared. */
export function attribute(
  missing: readonly Missing[],
  bindings: readonly Binding[],
  at: string,
): Findings {
  const eipOf = new Map<string, string>();
  for (const b of bindings) {
    eipOf.set(b.eip, b.eip);
    eipOf.set(b.vmi, b.eip);
  }
  const perEip = new Map<string, Missing[]>();
  const shared: Missing[] = [];
  for (const m of missing) {
    const eips = new Set((m.what.match(ADDRESS) ?? []).flatMap((a) => eipOf.get(a) ?? []));
    if (eips.size === 0) shared.push(m);
    for (const eip of eips) perEip.set(eip, [...(perEip.get(eip) ?? []), m]);
  }
  return {
    at,
    covered: new Map(bindings.map((b) => [b.eip, b.vmi])),
    missing: perEip,
    shared,
  };
}

/** The most items a message names; the count of the others follows. */
const NAMED_MAX = 4;

function listed(items: readonly Missing[]): string {
  const named = items.slice(0, NAMED_MAX).map((m) => m.what);
  const more = items.length - named.length;
  return named.join("; ") + (more > 0 ? `; and ${more} more` : "");
}

function coveredNow(b: Binding, f: Findings | undefined): f is Findings {
  return f !== undefined && f.covered.get(b.eip) === b.vmi;
}

export function programmedOf(
  b: Binding,
  state: { readonly pending: boolean; readonly lastError: string | undefined },
  findings: Findings | undefined,
): BindingCondition {
  if (state.pending) {
    return {
      status: "False",
      reason: "NotWritten",
      message: `saved, but writing it to the kernel failed; retrying: ${state.lastError ?? "no error recorded"}`,
    };
  }
  if (!coveredNow(b, findings)) {
    return { status: "Unknown", reason: "NotReadBack", message: "written, not read back yet" };
  }
  const missing = [...findings.shared, ...(findings.missing.get(b.eip) ?? [])].filter(
    (m) => m.answers !== true,
  );
  const answers = (findings.missing.get(b.eip) ?? []).filter((m) => m.answers === true);
  const all = [...missing, ...answers];
  if (all.length === 0) {
    return {
      status: "True",
      reason: "ReadBack",
      message: `the kernel held its NAT, routes and ARP answer at ${findings.at}`,
    };
  }
  const repair =
    findings.repairError !== undefined
      ? `; repairing failed: ${findings.repairError}`
      : findings.repairedAt !== undefined
        ? `; rewritten at ${findings.repairedAt}, True again once a read-back finds it whole`
        : "; being rewritten";
  return {
    status: "False",
    reason: "Missing",
    message: `read back at ${findings.at}, the kernel lacked: ${listed(all)}${repair}`,
  };
}

/** With BGP: the speaker's view; without: what the gateway device answers ARP for. */
export function announcedOf(
  b: Binding,
  findings: Findings | undefined,
  /** "off" without BGP; undefined while the speaker was not asked yet. */
  bgp: BgpView | "off" | undefined,
): BindingCondition {
  if (bgp !== "off") return bgpAnnounced(b, bgp);
  if (!coveredNow(b, findings)) {
    return { status: "Unknown", reason: "NotReadBack", message: "written, not read back yet" };
  }
  const answers = (findings.missing.get(b.eip) ?? []).filter((m) => m.answers === true);
  if (answers.length > 0) {
    return {
      status: "False",
      reason: "NotAnswered",
      message: `read back at ${findings.at}, the gateway device does not answer ARP for it: lacked ${listed(answers)}`,
    };
  }
  return {
    status: "True",
    reason: "ArpAnswered",
    message: `the gateway device answered ARP for ${b.eip} at ${findings.at}`,
  };
}

function bgpAnnounced(b: Binding, view: BgpView | undefined): BindingCondition {
  if (view === undefined) {
    return { status: "Unknown", reason: "NotReadBack", message: "the BGP speaker not asked yet" };
  }
  if ("error" in view) {
    return {
      status: "False",
      reason: "SpeakerUnavailable",
      message: `the BGP speaker did not answer at ${view.at}: ${view.error}`,
    };
  }
  const established = [...view.sent.keys()];
  if (established.length === 0) {
    const peers = view.peers.map((p) => `${p.address} ${p.state}`).join(", ") || "none";
    return {
      status: "False",
      reason: "NoEstablishedPeer",
      message: `no BGP session is established at ${view.at} (peers: ${peers})`,
    };
  }
  const sentTo = established.filter((p) => view.sent.get(p)?.has(b.eip) === true);
  if (sentTo.length === 0) {
    return {
      status: "False",
      reason: "NotSent",
      message: `no established peer had been sent ${b.eip}/32 at ${view.at} (established: ${established.join(", ")})`,
    };
  }
  return {
    status: "True",
    reason: "Announced",
    message: `${b.eip}/32 sent to ${sentTo.join(", ")} (${sentTo.length} of ${view.peers.length} peers) at ${view.at}`,
  };
}
