// Helpers the managers share for read()/adopt() (see KernelManager in manager.ts).
//
// read() runs outside the apply loop and is slow anyway (it runs the save/show commands), so
// it also builds the belief its snapshot stands for; the first adopt() of that snapshot takes
// that belief as it is, which keeps adopt(), run inside the loop, cheap. A later adopt() of
// the same snapshot (the first one's belief has been updated since) builds a fresh one.
//
// A belief's keys are strings parsed out of the kernel's output. The desired state holds
// equal strings, but other objects: a map lookup of one by the other compares the contents,
// which is about twice as slow as a lookup of the very same string object (whose hash is
// cached and whose comparison is a pointer check). plan() gives a binding the same string
// objects on every apply, so a belief keyed by the desired strings of the time of the read
// keeps the managers' per-item lookups on that fast path. Equal strings are the same key to
// a Map, so this changes nothing but speed.

/** Beliefs made by read() for the snapshots it returned, until adopt() takes them. */
export class PreparedBeliefs<S extends object, B> {
  private readonly beliefs = new WeakMap<S, B>();

  /** Remembers the belief made for `snapshot`; returns the snapshot. */
  put(snapshot: S, belief: B): S {
    this.beliefs.set(snapshot, belief);
    return snapshot;
  }

  /** The belief made for `snapshot`, once: a second call returns undefined. */
  take(snapshot: S): B | undefined {
    const belief = this.beliefs.get(snapshot);
    this.beliefs.delete(snapshot);
    return belief;
  }
}

/** Each string mapped to itself, to key a belief by these string objects (see above). */
export function sameStrings(strings: Iterable<string>): Map<string, string> {
  const result = new Map<string, string>();
  for (const s of strings) result.set(s, s);
  return result;
}
