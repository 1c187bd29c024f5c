// IpsetManager: the members of the ipsets named in the desired state.
//
// What it owns: the membership of each named set, nothing else. It creates a named set that
// is missing (hash:ip / hash:net, family inet, hashsize 4096, maxelem 1048576) but never
// destroys, renames or re-types a set, and never looks at any other set. A named set that
// exists with another type or family is an error: we refuse to guess what the operator meant.
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
//
// Belief: after a successful write the manager believes the sets hold exactly the desired
// members and does not read again unless asked (reread) or a set name it never read shows up.
// Any failure forgets the belief, so the next apply reads the kernel first.
import type { IpsetSpec } from "../agent/plan.js";
import { formatIpv4Net, parseIpv4Net } from "../common/ipv4.js";
import { canonicalAddress } from "./canonical.js";
import { KernelError, Phase, type KernelManager } from "./manager.js";
import type { CommandRunner } from "./runner.js";

/** Options of the sets we create; existing sets keep whatever they were created with. */
export const NEW_SET_OPTIONS = "family inet hashsize 4096 maxelem 1048576";

export interface SavedSet {
  readonly type: string;
  /** The `family` option of the create line ("inet", "inet6"), or "" when absent. */
  readonly family: string;
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
      sets.set(name, { type, family, members: new Set() });
    }
  }
  return sets;
}

interface Belief {
  /** The set names that were read: a name not in here needs a read before a write. */
  readonly names: Set<string>;
  readonly sets: Map<string, SavedSet>;
}

export class IpsetManager implements KernelManager<readonly IpsetSpec[]> {
  private desired: readonly IpsetSpec[] = [];
  private belief: Belief | undefined;

  constructor(private readonly runner: CommandRunner) {}

  setDesired(desired: readonly IpsetSpec[]): void {
    this.desired = desired;
  }

  async apply(options: { reread: boolean }): Promise<number> {
    const desired = this.desired;
    try {
      let belief = this.belief;
      if (
        options.reread ||
        belief === undefined ||
        desired.some((s) => !belief?.names.has(s.name))
      ) {
        belief = await this.read(desired);
        this.belief = belief;
      }
      const { script, count, after } = diff(desired, belief);
      if (count === 0) return 0;
      // Forget the belief before writing: a failed or partial write leaves it unknown.
      this.belief = undefined;
      await this.runner.run("ipset", ["restore"], { input: script });
      for (const [name, set] of after) belief.sets.set(name, set);
      this.belief = belief;
      return count;
    } catch (err) {
      this.belief = undefined;
      if (err instanceof KernelError) throw err;
      throw new KernelError(Phase.Ipset, `ipset: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async read(desired: readonly IpsetSpec[]): Promise<Belief> {
    const names = new Set(desired.map((s) => s.name));
    const { stdout } = await this.runner.run("ipset", ["save"]);
    return { names, sets: parseIpsetSave(stdout, names) };
  }
}

const TOKEN = /^[^\s]+$/;

function diff(
  desired: readonly IpsetSpec[],
  belief: Belief,
): { script: string; count: number; after: Map<string, SavedSet> } {
  const creates: string[] = [];
  const dels: string[] = [];
  const adds: string[] = [];
  const after = new Map<string, SavedSet>();
  for (const spec of desired) {
    // One restore line per item: nothing may smuggle in a space or a line break.
    if (!TOKEN.test(spec.name) || !spec.members.every((m) => TOKEN.test(m))) {
      throw new KernelError(Phase.Ipset, `invalid ipset spec ${JSON.stringify(spec.name)}`);
    }
    const current = belief.sets.get(spec.name);
    if (current === undefined) {
      creates.push(`create ${spec.name} ${spec.type} ${NEW_SET_OPTIONS} -exist`);
    } else if (current.type !== spec.type || (current.family !== "inet" && current.family !== "")) {
      throw new KernelError(
        Phase.Ipset,
        `ipset ${spec.name} exists as ${current.type} family ${current.family || "?"}, ` +
          `expected ${spec.type} family inet; refusing to change it`,
      );
    }
    const want = new Set<string>();
    for (const member of spec.members) want.add(normalizeMember(spec.type, member));
    let changed = current === undefined;
    if (current !== undefined) {
      for (const key of current.members) {
        if (!want.has(key)) {
          dels.push(`del ${spec.name} ${memberOfKey(key)} -exist`);
          changed = true;
        }
      }
    }
    for (const member of want) {
      if (current === undefined || !current.members.has(member)) {
        adds.push(`add ${spec.name} ${member} -exist`);
        changed = true;
      }
    }
    if (changed) after.set(spec.name, { type: spec.type, family: "inet", members: want });
  }
  const lines = [...creates, ...dels, ...adds];
  return { script: lines.length === 0 ? "" : lines.join("\n") + "\n", count: lines.length, after };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
