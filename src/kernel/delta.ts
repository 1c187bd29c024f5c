// DeltaTracker: what one keyed part of the kernel must gain and lose to hold a desired list,
// in the spirit of Felix's deltatracker (desired against what the dataplane is believed to
// hold; the pending updates and deletions are the difference).
//
// Three views meet here. The desired list comes whole on every apply (plan() output). The
// belief is a map from key to entry, filled from what the kernel printed when it was read
// back (a manager replaces the tracker after each read) and updated in place after each
// successful write (commit). A diff compares the two: the desired keys the belief lacks
// (adds), the believed entries that are wanted but differ (changes, when the caller asks),
// and the believed keys nobody wants (deletes).
//
// Cost follows the change, not the size: a diff does one map lookup per desired item the
// belief holds under that very string, calls `canonical` (validation, normalisation) only
// for the others, and walks the belief only when some of it must go. Marking an entry as
// wanted writes the number of the diff into it (`seen`), so a diff allocates nothing per
// held item. Each entry also keeps its place (`order`): the kernel's order after a read, the
// desired order after a commit; deletions come in that order.

/** What the tracker keeps in every believed entry; managers extend it with their own data. */
export interface DeltaEntry {
  /** The last diff that wanted this entry, and the index of its first desired item then. */
  seen: number;
  pos: number;
  /** Its place: the kernel's order after a read, the desired order after a commit. */
  order: number;
}

/** The difference one diff found; commit() applies it to the belief once it is written. */
export interface Delta {
  readonly pass: number;
  /** Desired keys the belief lacks, once each, in desired order. */
  readonly adds: readonly string[];
  /** The desired index of each of `adds`. */
  readonly addPos: readonly number[];
  /** Wanted keys whose believed entry `changed` said differs. */
  readonly changes: readonly string[];
  /** Believed keys no desired item wants, in believed order. */
  readonly deletes: readonly string[];
}

export interface DiffOptions<E extends DeltaEntry> {
  /**
   * The key for a desired item the belief does not hold under that string: its validated,
   * canonical form. Throws for an item that cannot be written.
   */
  canonical(item: string): string;
  /** Whether a believed entry may stand for a desired item (default: any entry may). */
  usable?(entry: E): boolean;
  /** Whether a wanted believed entry must be rewritten (default: never). */
  changed?(entry: E): boolean;
  /**
   * Whether a missing key must not be added (someone else holds it): it is left out of
   * `adds` (default: none is).
   */
  refused?(key: string): boolean;
  /** Called with the key of every desired item, before it is looked at (e.g. to mark state kept beside the belief). */
  visit?(key: string): void;
}

export class DeltaTracker<E extends DeltaEntry> {
  /** Numbers the diffs, so that marking an entry as wanted allocates nothing. */
  private pass = 0;

  /** `believed` is taken as it is (usually just built from a read) and updated in place. */
  constructor(readonly believed: Map<string, E> = new Map()) {}

  diff(desired: readonly string[], options: DiffOptions<E>): Delta {
    const { believed } = this;
    const { canonical, usable, changed, refused, visit } = options;
    const pass = ++this.pass;
    let hits = 0;
    const adds: string[] = [];
    const addPos: number[] = [];
    const changes: string[] = [];
    let adding: Set<string> | undefined;
    // An index loop: a for-of allocates an iterator result per item until the loop is
    // optimised, and these loops run over every binding.
    for (let pos = 0; pos < desired.length; pos++) {
      const item = desired[pos] as string;
      let key = item;
      let entry = believed.get(item);
      if (entry !== undefined && usable !== undefined && !usable(entry)) entry = undefined;
      if (entry === undefined) {
        key = canonical(item);
        if (key !== item) {
          entry = believed.get(key);
          if (entry !== undefined && usable !== undefined && !usable(entry)) entry = undefined;
        }
      }
      visit?.(key);
      if (entry !== undefined) {
        if (entry.seen !== pass) {
          entry.seen = pass;
          entry.pos = pos;
          hits++;
          if (changed?.(entry) === true) changes.push(key);
        }
        continue;
      }
      if (refused?.(key) === true) continue;
      adding ??= new Set();
      if (adding.has(key)) continue;
      adding.add(key);
      adds.push(key);
      addPos.push(pos);
    }
    const deletes: string[] = [];
    if (hits < believed.size) {
      // forEach: a for-of over the entries allocates a pair per entry.
      believed.forEach((entry, key) => {
        if (entry.seen !== pass) deletes.push(key);
      });
      deletes.sort((a, b) => (believed.get(a)?.order ?? 0) - (believed.get(b)?.order ?? 0));
    }
    return { pass, adds, addPos, changes, deletes };
  }

  /** Whether the diff `delta` wanted the believed entry of `key`. */
  wanted(delta: Delta, key: string): boolean {
    return this.believed.get(key)?.seen === delta.pass;
  }

  /**
   * Makes the belief what the diff asked for, once its write succeeded: the deletes go, the
   * adds arrive (made by `make`), and every entry takes its desired place. A changed entry
   * is the caller's to update (entries are its own objects).
   */
  commit(delta: Delta, make: (key: string, base: DeltaEntry) => E): void {
    const { believed } = this;
    for (const key of delta.deletes) believed.delete(key);
    delta.adds.forEach((key, i) => {
      const pos = delta.addPos[i] ?? 0;
      believed.set(key, make(key, { seen: delta.pass, pos, order: pos }));
    });
    // Every entry left was wanted by this diff: the belief is now in the desired order.
    believed.forEach((entry) => {
      entry.order = entry.pos;
    });
  }
}
