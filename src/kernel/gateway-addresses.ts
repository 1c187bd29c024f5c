// GatewayAddresses: RouteManager's part (iproute.ts) that owns the EIPs held as addresses
// on the gateway device.
//
// What it owns: on the gateway device, the addresses it marked: each EIP it adds is a /32
// with the label `<dev>:eip` (ourAddressLabel; addresses have no other mark iproute2 6.1 can
// write, and a label cannot change in place). Adopted at the first read only, while their
// EIP is bound (the saved binding is the record): the seed's EIPs with the EIP network's
// prefix (e.g. /24), replaced by a marked /32 without a gap (added before the old one is
// deleted), and an earlier version's unmarked /32s, kept as they are and remembered as ours
// until deleted. Any other address is never touched, even inside the EIP network (the node's
// own /24, a keepalived or kube-vip VIP); a bound EIP that someone else holds there is never
// taken over: the apply fails with Phase.Address naming it. (A device name too long for the
// label leaves only the in-memory record: such addresses are ours while this process knows
// it added them.)
//
// How it reads (RouteManager runs the command): `ip -json -4 addr show dev <gatewayDev>`.
//
// What it writes, after the policy routing in RouteManager's batch: address additions
// (`address add EIP/32 label <dev>:eip`: an address someone else added since the read fails
// the line rather than become ours), then address deletions. Deleting an adopted non-/32
// EIP that is the primary address of its subnet would, with promote_secondaries off, make
// the kernel delete every secondary of that subnet too (possibly the node's own address):
// the plan says so, and RouteManager sets promote_secondaries first. Such a deletion also
// asks for a re-read (secondaries may have been promoted).
//
// Belief: our /32 addresses in a delta tracker (delta.ts) by address, updated in place with
// what was written; someone else's /32s in a map beside it (a wanted one is a conflict);
// the other addresses (other prefixes, other spellings, copies) in device order. A plan
// costs one lookup per desired address it already holds and walks the belief only when one
// of ours must go.
import { netContains, parseIpv4, parseIpv4Net } from "../common/ipv4.js";
import { canonicalAddress } from "./canonical.js";
import { type DeltaEntry, DeltaTracker } from "./delta.js";
import { type KernelAddress, ourAddressLabel } from "./iproute-parse.js";
import { KernelError, Phase } from "./manager.js";
import { sameStrings } from "./snapshot.js";

/**
 * An address of the gateway device, with whether it lies in the EIP network and whether it
 * carries our mark (the label `<dev>:eip`).
 */
export interface HeldAddress extends KernelAddress {
  readonly inEipNet: boolean;
  readonly marked: boolean;
}

/** A held address in the belief (`seen`: the last plan pass that wanted it). */
interface AddressEntry extends HeldAddress, DeltaEntry {
  /** Marked, or recorded as ours: only such an address is ever deleted. */
  readonly ours: boolean;
  /** Its position on the device: deletions are written in this order. */
  readonly seq: number;
}

export interface AddressBelief {
  /** Our canonical /32 addresses of the gateway device, by address (see fileAddress). */
  readonly ours32: DeltaTracker<AddressEntry>;
  /** Someone else's canonical /32 addresses of the device, by address. */
  readonly foreign32: Map<string, AddressEntry>;
  /** The other addresses of the device (mostly other prefixes), in device order. */
  others: AddressEntry[];
  /** Those of `others` that lie in the EIP network, by address. */
  othersInEipNet: Map<string, AddressEntry[]>;
  nextSeq: number;
}

export interface AddressPlan {
  /** Batch lines, all of Phase.Address. */
  readonly lines: readonly string[];
  /** Whether the lines delete the device's last IPv4 address. */
  readonly lastAddressGone: boolean;
  /** Whether the gateway device needs promote_secondaries before the batch runs. */
  readonly promoteSecondaries: boolean;
  /** True when the belief cannot be trusted after the write, even if it succeeds. */
  readonly rereadAfter: boolean;
  /** EIPs the lines add. */
  readonly added: readonly string[];
  /** EIPs whose address (not wanted any more) the lines delete. */
  readonly left: readonly string[];
  /** The addresses ("A/P") the lines delete. */
  readonly deleted: readonly string[];
  /** Updates the belief to what the kernel holds once the lines succeeded. */
  commit(): void;
}

export class GatewayAddresses {
  /** Numbers the plan passes, so that marking an address as wanted allocates nothing. */
  private pass = 0;
  /** Our mark on the addresses we add; undefined when `<dev>:eip` is longer than a label may be. */
  private readonly label: string | undefined;
  /** Unmarked addresses ("A/P") that are ours: adopted at start, or added without a label. */
  private readonly recorded = new Set<string>();

  constructor(
    private readonly options: {
      readonly gatewayDev: string;
      readonly inEipNet: (address: string) => boolean;
    },
  ) {
    this.label = ourAddressLabel(options.gatewayDev);
  }

  held(a: KernelAddress): HeldAddress {
    const marked = this.label !== undefined && a.label === this.label;
    return { ...a, inEipNet: this.options.inEipNet(a.address), marked };
  }

  /**
   * A fresh belief from what was read (never changed), keyed by the string objects of
   * `gatewayAddresses` where they are equal (see snapshot.ts). `adopting`: the first read.
   */
  beliefOf(
    addresses: readonly HeldAddress[],
    gatewayAddresses: readonly string[],
    adopting: boolean,
  ): AddressBelief {
    const belief: AddressBelief = {
      ours32: new DeltaTracker(),
      foreign32: new Map(),
      others: [],
      othersInEipNet: new Map(),
      nextSeq: 0,
    };
    const sameAddress = sameStrings(gatewayAddresses);
    for (const a of addresses) {
      const key = `${a.address}/${a.prefix}`;
      // The seed's /24 EIPs and an earlier version's unmarked /32s: adopted at start while
      // bound (the binding is the record), remembered until deleted. A label cannot be
      // changed in place, so they stay unmarked.
      if (adopting && a.inEipNet && !a.marked && sameAddress.has(a.address)) {
        this.recorded.add(key);
      }
      const seq = belief.nextSeq++;
      const entry: AddressEntry = {
        address: sameAddress.get(a.address) ?? a.address,
        prefix: a.prefix,
        secondary: a.secondary,
        inEipNet: a.inEipNet,
        marked: a.marked,
        ours: a.inEipNet && (a.marked || this.recorded.has(key)),
        seq,
        seen: 0,
        pos: seq,
        order: seq,
      };
      // Only canonical /32s are looked up by address: a desired address equal to another
      // spelling must be refused as invalid.
      fileAddress(belief, entry, a.prefix === 32 && canonicalAddress(a.address) === a.address);
    }
    return belief;
  }

  /**
   * The lines for the difference between the desired addresses and `belief`. Cost: one map
   * lookup per desired address the belief holds; only the others are validated, and the
   * belief is only walked when some of our addresses must go. A wanted EIP that someone
   * else holds here goes to `conflicts`.
   */
  plan(addresses: readonly string[], belief: AddressBelief, conflicts: string[]): AddressPlan {
    const { gatewayDev } = this.options;
    // Numbers the marks on `others` (the tracker numbers its own entries' marks).
    const pass = ++this.pass;
    const { ours32, foreign32, othersInEipNet } = belief;
    /** Wanted addresses that someone else holds under another prefix or spelling. */
    const foreignOthers = new Set<string>();
    const delta = ours32.diff(addresses, {
      canonical: (text) => {
        const address = canonicalAddress(text);
        if (address === undefined) {
          throw new KernelError(Phase.Address, `invalid gateway address ${JSON.stringify(text)}`);
        }
        return address;
      },
      // The same address under other prefixes: ours go (a /32 replaces them), anyone
      // else's makes the address a conflict.
      ...(othersInEipNet.size === 0
        ? {}
        : {
            visit: (address: string) => {
              for (const other of othersInEipNet.get(address) ?? []) {
                other.seen = pass;
                if (!other.ours) foreignOthers.add(address);
              }
            },
          }),
      refused: (address) => {
        if (!foreign32.has(address) && !foreignOthers.has(address)) return false;
        conflicts.push(address);
        return true;
      },
    });
    const addedAddresses = delta.adds;
    // Deleted: an address of ours that is not wanted, another prefix of a wanted EIP.
    const deleted = delta.deletes.map((address) => ours32.believed.get(address) as AddressEntry);
    let otherDeleted = false;
    for (const a of belief.others) {
      if (!a.ours || (a.prefix === 32 && a.seen === pass)) continue;
      deleted.push(a);
      otherDeleted = true;
    }
    deleted.sort((a, b) => a.seq - b.seq);
    // Left the node: an unwanted /32 of ours, or another prefix of an address not wanted.
    const left = deleted
      .filter((a) => ours32.believed.get(a.address) === a || a.seen !== pass)
      .map((a) => a.address);
    const lines: string[] = [];
    const label = this.label === undefined ? "" : ` label ${this.label}`;
    for (const address of addedAddresses) {
      // `add`, not `replace`: an address someone added since the read fails the line
      // instead of becoming ours.
      lines.push(`address add ${address}/32 dev ${gatewayDev}${label}`);
      // Without a label the record is the only mark: kept from the write on.
      if (this.label === undefined) this.recorded.add(`${address}/32`);
    }
    for (const a of deleted) lines.push(`address del ${a.address}/${a.prefix} dev ${gatewayDev}`);
    const heldCount = ours32.believed.size + foreign32.size + belief.others.length;
    let promoteSecondaries = false;
    let rereadAfter = false;
    if (otherDeleted) {
      const deletedSet = new Set<KernelAddress>(deleted);
      for (const a of deleted) {
        if (a.prefix === 32) continue;
        // Secondaries of a /n come and go with its primary: re-read after such a change.
        rereadAfter = true;
        if (!a.secondary && hasOtherSecondaries(a, belief.others, deletedSet)) {
          promoteSecondaries = true;
        }
      }
    }
    return {
      lines,
      lastAddressGone:
        deleted.length > 0 && heldCount - deleted.length + addedAddresses.length === 0,
      promoteSecondaries,
      rereadAfter,
      added: addedAddresses,
      left,
      deleted: deleted.map((a) => `${a.address}/${a.prefix}`),
      commit: () => {
        if (otherDeleted) {
          const gone = new Set(deleted);
          const others = belief.others.filter((a) => !gone.has(a));
          belief.others = [];
          belief.othersInEipNet = new Map();
          for (const a of others) fileAddress(belief, a, false);
        }
        ours32.commit(delta, (address, base) => ({
          ...this.held({
            address,
            prefix: 32,
            secondary: false,
            ...(this.label === undefined ? {} : { label: this.label }),
          }),
          ...base,
          ours: true,
          seq: belief.nextSeq++,
        }));
      },
    };
  }

  /** After a successful write: the deleted addresses ("A/P") are no longer ours. */
  forget(deleted: readonly string[]): void {
    for (const a of deleted) this.recorded.delete(a);
  }
}

/**
 * Files an address of the device in the belief: a canonical /32 (`byAddress`) under its
 * address, unless that address is there already; anything else among the others.
 */
function fileAddress(belief: AddressBelief, a: AddressEntry, byAddress: boolean): void {
  const ours = belief.ours32.believed;
  if (byAddress && !ours.has(a.address) && !belief.foreign32.has(a.address)) {
    (a.ours ? ours : belief.foreign32).set(a.address, a);
    return;
  }
  belief.others.push(a);
  if (!a.inEipNet) return;
  const same = belief.othersInEipNet.get(a.address);
  if (same === undefined) belief.othersInEipNet.set(a.address, [a]);
  else same.push(a);
}

/** Whether deleting primary `a` would also delete a secondary we are not deleting. */
function hasOtherSecondaries(
  a: KernelAddress,
  all: readonly KernelAddress[],
  deleted: ReadonlySet<KernelAddress>,
): boolean {
  const net = parseIpv4Net(`${a.address}/${a.prefix}`, { allowHostBits: true });
  if (net === undefined) return true;
  return all.some((b) => {
    if (b === a || deleted.has(b) || !b.secondary || b.prefix !== a.prefix) return false;
    const value = parseIpv4(b.address);
    return value !== undefined && netContains(net, value);
  });
}
