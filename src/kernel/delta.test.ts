import { test } from "node:test";
import assert from "node:assert/strict";
import { type DeltaEntry, DeltaTracker } from "./delta.js";

interface Entry extends DeltaEntry {
  value: string;
}

/** A belief as a read would build it: entries in kernel order. */
function read(pairs: [string, string][]): DeltaTracker<Entry> {
  return new DeltaTracker(
    new Map(pairs.map(([key, value], order) => [key, { value, seen: 0, pos: order, order }])),
  );
}

const lower = { canonical: (item: string) => item.toLowerCase() };

test("adds the desired keys the belief lacks and deletes the ones nobody wants, in order", () => {
  const t = read([
    ["d", "1"],
    ["a", "1"],
    ["c", "1"],
  ]);
  const delta = t.diff(["b", "a", "e", "b"], lower);
  assert.deepEqual(delta.adds, ["b", "e"]);
  assert.deepEqual(delta.addPos, [0, 2]);
  // Kernel order, not key order.
  assert.deepEqual(delta.deletes, ["d", "c"]);
  assert.deepEqual(delta.changes, []);
  t.commit(delta, (key, base) => ({ ...base, value: key }));
  assert.deepEqual([...t.believed.keys()].sort(), ["a", "b", "e"]);
  // The same desired list again is no change at all.
  const again = t.diff(["b", "a", "e", "b"], lower);
  assert.deepEqual([again.adds, again.deletes, again.changes], [[], [], []]);
});

test("after a commit, deletions come in the desired order", () => {
  const t = read([
    ["z", "1"],
    ["y", "1"],
  ]);
  const first = t.diff(["x", "y", "z"], lower);
  t.commit(first, (_key, base) => ({ ...base, value: "1" }));
  assert.deepEqual(t.diff([], lower).deletes, ["x", "y", "z"]);
});

test("a desired item in another spelling matches its canonical key; an invalid one throws", () => {
  const t = read([["a", "1"]]);
  const delta = t.diff(["A"], lower);
  assert.deepEqual([delta.adds, delta.deletes], [[], []]);
  assert.ok(t.wanted(delta, "a"));
  assert.throws(
    () =>
      t.diff(["bad item"], {
        canonical: () => {
          throw new Error("invalid");
        },
      }),
    /invalid/,
  );
});

test("canonical is called only for items the belief does not hold under that string", () => {
  const t = read([
    ["a", "1"],
    ["b", "1"],
  ]);
  const asked: string[] = [];
  t.diff(["a", "b", "c"], {
    canonical: (item) => {
      asked.push(item);
      return item;
    },
  });
  assert.deepEqual(asked, ["c"]);
});

test("an entry that is not usable never stands for a desired item: it is deleted and re-added", () => {
  const t = read([["a", "bad"]]);
  const delta = t.diff(["a"], { ...lower, usable: (e) => e.value !== "bad" });
  assert.deepEqual([delta.adds, delta.deletes], [["a"], ["a"]]);
});

test("changed entries are reported once; refused keys are not added", () => {
  const t = read([
    ["a", "old"],
    ["b", "new"],
  ]);
  const delta = t.diff(["a", "b", "a", "c", "d"], {
    ...lower,
    changed: (e) => e.value !== "new",
    refused: (key) => key === "c",
  });
  assert.deepEqual(delta.changes, ["a"]);
  assert.deepEqual(delta.adds, ["d"]);
  assert.deepEqual(delta.deletes, []);
});

test("a diff that is not committed leaves the belief as it was", () => {
  const t = read([["a", "1"]]);
  t.diff(["b"], lower);
  assert.deepEqual([...t.believed.keys()], ["a"]);
  assert.deepEqual(t.diff(["b"], lower).deletes, ["a"]);
});

test("visit sees the key of every desired item, held or not, in desired order", () => {
  const t = read([["a", "1"]]);
  const seen: string[] = [];
  t.diff(["A", "b", "a"], { ...lower, visit: (key) => seen.push(key) });
  assert.deepEqual(seen, ["a", "b", "a"]);
});
