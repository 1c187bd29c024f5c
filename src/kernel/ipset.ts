// IpsetManager: the members of the ipsets named in the desired state.
//
// What it owns: the membership of each named set, nothing else. It creates a named set that
// is missing (hash:ip / hash:net, family inet, hashsize 4096, maxelem 1048576, and
// `counters` when the spec asks for them) but never destroys, renames or re-types a set, and
// never looks at any other set. A named set that exists with another type or family, or
// without the counters its spec asks for, is an error: we refuse to guess what the operator
// meant. (A member's counters, `packets N bytes M` in `ipset save`, are read by traffic.ts.)
//
// How it reads: `ipset save`, keeping only the `create NAME ...` and `add NAME MEMBER ...`
// lines of the named sets. Members are normalised so the kernel's spelling compares equal to
// ours: hash:ip members to the canonical address, hash:net members to a canonical CIDR
// (ipset prints a /32 member of a hash:net as a bare address). A member saved with the
// `nomatch` flag is an exclusion, not a member: it is kept under its own key so it never
// counts as the member we want, and gets deleted (and re-added plainly, if wanted).
//
// How it writes: one `ipset restore` call whose stdin holds, in this order, a `create ...
// -exist` line for each missing set, then `del NAME M -exist` for members that must go (so a
// full set makes room first), then `add NAME M -exist` for members that are missing. Every
// line carries -exist, so a stale belief can only cause extra no-op lines, never an error.
// An apply may leave the adds out (iptables-dataplane.ts: a set's members open the way for
// packets, so new ones go in only once the rules that NAT them are written).
//
// Belief: after a successful write the manager believes the sets hold exactly the desired
// members and does not read again unless asked (reread) or a set name it never read shows up.
// Any failure forgets the belief, so the next apply reads the kernel first. The belief is a
// map per set, updated in place with what was written; a diff costs one lookup per desired
// member it already holds, and validates and normalises only the members it does not hold
// (every key it holds is a normalised token), and walks a set's members only when some must
// go or, once, to renumber their order after a write that changed the set; so its cost
// follows the change, not the size of the sets. read() and adopt() let the caller do the
// slow `ipset save` apart from apply().
import type { IpsetSpec } from "../model/desired.js";
import { formatIpv4Net, parseIpv4Net } from "../common/ipv4.js";
import { canonicalAddress } from "./canonical.js";
import { type Delta, type DeltaEntry, DeltaTracker } from "./delta.js";
import { KernelError, Phase, type KernelManager } from "./manager.js";
import type { CommandRunner } from "./runner.js";
import { PreparedBeliefs, sameStrings } from "./snapshot.js";

/** Options of the sets we create; existing sets keep whatever they were created with. */
export const NEW_SET_OPTIONS = "family inet hashsize 4096 maxelem 1048576";

export interface SavedSet {
  readonly type: string;
  /** The `family` option of the create line ("inet", "inet6"), or "" when absent. */
  readonly family: string;
  /** Whether the create line has the `counters` option. */
  readonly counters: boolean;
  /** Normalised member keys (see normalizeMember); a nomatch entry is "<member> nomatch". */
  readonly members: Set<string>;
}

/** Canonical spelling of a member for a set of this type; unknown text comes back unchanged. */
export function normalizeMember(type: string, member: string): string {
  if (type === "hash:ip") return canonicalAddress(member) ?? member;
  if (type === "hash:net") {
    const net = parseIpv4Net(member, { allowHostBits: true });
    return net === undefined ? member : formatIpv4Net(net);
  }
  return member;
}

/** The member to name in an `add`/`del` line for a member key. */
function memberOfKey(key: string): string {
  const space = key.indexOf(" ");
  return space === -1 ? key : key.slice(0, space);
}

/** Parses `ipset save` output, keeping only the sets in `names`. */
export function parseIpsetSave(text: string, names: ReadonlySet<string>): Map<string, SavedSet> {
  const sets = new Map<string, SavedSet>();
  for (const line of text.split("\n")) {
    if (line.startsWith("add ")) {
      const nameEnd = line.indexOf(" ", 4);
      if (nameEnd === -1) continue;
      const name = line.slice(4, nameEnd);
      if (!names.has(name)) continue;
      const set = sets.get(name);
      if (set === undefined) continue; // ipset save always prints create before add
      const [member = "", ...options] = line
        .slice(nameEnd + 1)
        .trim()
        .split(/\s+/);
      const key = normalizeMember(set.type, member);
      set.members.add(options.includes("nomatch") ? `${key} nomatch` : key);
    } else if (line.startsWith("create ")) {
      const [, name = "", type = "", ...options] = line.trim().split(/\s+/);
      if (!names.has(name)) continue;
      const familyAt = options.indexOf("family");
      const family = familyAt === -1 ? "" : (options[familyAt + 1] ?? "");
      sets.set(name, { type, family, counters: options.includes("counters"), members: new Set() });
    }
  }
  return sets;
}

/** What read() returns: the named sets as `ipset save` showed them. */
export interface IpsetSnapshot {
  /** The set names that were read (a name missing from `sets` does not exist). */
  readonly names: ReadonlySet<string>;
  readonly sets: ReadonlyMap<string, SavedSet>;
}

/** A member of a set as the manager believes the kernel holds it. */
interface Member extends DeltaEntry {
  /** False for a key no desired member can equal (a nomatch entry): it is always deleted. */
  readonly wantable: boolean;
}

interface BelievedSet {
  readonly type: string;
  readonly family: string;
  readonly counters: boolean;
  readonly members: DeltaTracker<Member>;
}

interface Belief {
  /** The set names that were read: a name not in here needs a read before a write. */
  readonly names: Set<string>;
  readonly sets: Map<string, BelievedSet>;
}

/** What one set's part of the restore changes, to update the belief once it succeeded. */
interface SetChange {
  readonly name: string;
  readonly type: string;
  readonly counters: boolean;
  /** The set as believed before the write; undefined when it is created. */
  readonly current: BelievedSet | undefined;
  /** The members' tracker that made `delta` (a new one for a set that is created). */
  readonly members: DeltaTracker<Member>;
  readonly delta: Delta;
}

export class IpsetManager implements KernelManager<readonly IpsetSpec[], IpsetSnapshot> {
  private desired: readonly IpsetSpec[] = [];
  private belief: Belief | undefined;

  constructor(private readonly runner: CommandRunner) {}

  setDesired(desired: readonly IpsetSpec[]): void {
    this.desired = desired;
  }

  /**
   * With `additions: false` only the sets that are missing are created and the members that
   * must go deleted; the members to add wait for the next apply (iptables-dataplane.ts).
   */
  async apply(options: { reread: boolean; additions?: boolean }): Promise<number> {
    const desired = this.desired;
    try {
      let belief = this.belief;
      if (
        options.reread ||
        belief === undefined ||
        desired.some((s) => !belief?.names.has(s.name))
      ) {
        belief = beliefOf(await this.readSets(desired), desired);
        this.belief = belief;
      }
      const { script, count, changes } = this.diff(desired, belief, options.additions ?? true);
      if (count === 0) return 0;
      // Forget the belief before writing: a failed or partial write leaves it unknown.
      this.belief = undefined;
      await this.runner.run("ipset", ["restore"], { input: script });
      commit(belief, changes);
      this.belief = belief;
      return count;
    } catch (err) {
      this.belief = undefined;
      throw asKernelError(err);
    }
  }

  async read(): Promise<IpsetSnapshot> {
    const desired = this.desired;
    try {
      const snapshot = await this.readSets(desired);
      return prepared.put(snapshot, beliefOf(snapshot, desired));
    } catch (err) {
      throw asKernelError(err);
    }
  }

  adopt(snapshot: IpsetSnapshot): void {
    this.belief = prepared.take(snapshot) ?? beliefOf(snapshot, this.desired);
  }

  private async readSets(desired: readonly IpsetSpec[]): Promise<IpsetSnapshot> {
    const names = new Set(desired.map((s) => s.name));
    const { stdout } = await this.runner.run("ipset", ["save"]);
    return { names, sets: parseIpsetSave(stdout, names) };
  }

  /**
   * The restore script. Cost: one map lookup per desired member that the belief holds; only
   * a member it does not hold is validated and normalised, and the belief's members are only
   * walked when some of them must go (see delta.ts).
   */
  private diff(
    desired: readonly IpsetSpec[],
    belief: Belief,
    additions: boolean,
  ): { script: string; count: number; changes: SetChange[] } {
    const creates: string[] = [];
    const dels: string[] = [];
    const adds: string[] = [];
    const changes: SetChange[] = [];
    for (const spec of desired) {
      // One restore line per item: nothing may smuggle in a space or a line break.
      if (!TOKEN.test(spec.name)) invalidSpec(spec);
      const current = belief.sets.get(spec.name);
      // Each spec is compared with the belief as it was, like the others.
      const members = current?.members ?? new DeltaTracker<Member>();
      const found = members.diff(spec.members, {
        canonical: (member) => {
          // Not a key we hold (those are normalised tokens, or unwantable): check, normalise.
          if (!TOKEN.test(member)) invalidSpec(spec);
          return normalizeMember(spec.type, member);
        },
        usable: (entry) => entry.wantable,
      });
      const delta = additions ? found : { ...found, adds: [], addPos: [] };
      if (current === undefined) {
        const counters = spec.counters === true ? " counters" : "";
        creates.push(`create ${spec.name} ${spec.type} ${NEW_SET_OPTIONS}${counters} -exist`);
      } else if (
        current.type !== spec.type ||
        (current.family !== "inet" && current.family !== "") ||
        (spec.counters === true && !current.counters)
      ) {
        const wanted = spec.counters === true ? " with counters" : "";
        throw new KernelError(
          Phase.Ipset,
          `ipset ${spec.name} exists as ${current.type} family ${current.family || "?"}` +
            `${current.counters ? " with counters" : ""}, ` +
            `expected ${spec.type} family inet${wanted}; refusing to change it`,
        );
      }
      for (const key of delta.deletes) dels.push(`del ${spec.name} ${memberOfKey(key)} -exist`);
      for (const key of delta.adds) adds.push(`add ${spec.name} ${key} -exist`);
      if (current === undefined || delta.deletes.length > 0 || delta.adds.length > 0) {
        const counters = spec.counters === true;
        changes.push({ name: spec.name, type: spec.type, counters, current, members, delta });
      }
    }
    const lines = [...creates, ...dels, ...adds];
    return {
      script: lines.length === 0 ? "" : lines.join("\n") + "\n",
      count: lines.length,
      changes,
    };
  }
}

const TOKEN = /^[^\s]+$/;

function invalidSpec(spec: IpsetSpec): never {
  throw new KernelError(Phase.Ipset, `invalid ipset spec ${JSON.stringify(spec.name)}`);
}

const prepared = new PreparedBeliefs<IpsetSnapshot, Belief>();

/**
 * A fresh belief from a snapshot (which is never changed), keyed by the string objects of
 * `desired` where they are equal (see snapshot.ts).
 */
function beliefOf(snapshot: IpsetSnapshot, desired: readonly IpsetSpec[]): Belief {
  const sets = new Map<string, BelievedSet>();
  for (const [name, saved] of snapshot.sets) {
    const same = sameStrings(desired.find((spec) => spec.name === name)?.members ?? []);
    const members = new Map<string, Member>();
    let order = 0;
    for (const key of saved.members) {
      const wantable = TOKEN.test(key);
      members.set(same.get(key) ?? key, { wantable, seen: 0, pos: order, order });
      order++;
    }
    sets.set(name, {
      type: saved.type,
      family: saved.family,
      counters: saved.counters,
      members: new DeltaTracker(members),
    });
  }
  return { names: new Set(snapshot.names), sets };
}

/** Updates the belief after a successful restore: the sets now hold what was desired. */
function commit(belief: Belief, changes: readonly SetChange[]): void {
  for (const change of changes) {
    const { members } = change;
    if (change.current === undefined) {
      belief.sets.set(change.name, {
        type: change.type,
        family: "inet",
        counters: change.counters,
        members,
      });
    }
    members.commit(change.delta, (_key, base) => ({ ...base, wantable: true }));
  }
}

function asKernelError(err: unknown): KernelError {
  if (err instanceof KernelError) return err;
  return new KernelError(Phase.Ipset, `ipset: ${errorMessage(err)}`, { cause: err });
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
