// Crash injection for the binding store: whatever a crash leaves on disk, loading returns
// every acknowledged change, or refuses; never fewer.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  copyFile,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  truncate,
  unlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Change, HeldBinding } from "./binding-table.js";
import { BindingStore, StateError } from "./store.js";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "keip-crash-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const SNAPSHOT: HeldBinding[] = [
  { eip: "192.168.18.100", vmi: "10.244.1.10", since: "A" },
  { eip: "192.168.18.101", vmi: "10.244.1.11", since: "A" },
];
const CHANGES: Change[] = [
  { op: "bind", eip: "192.168.18.102", vmi: "10.244.1.12", since: "B" },
  { op: "unbind", eip: "192.168.18.100", vmi: "10.244.1.10" },
  { op: "bind", eip: "192.168.18.100", vmi: "10.244.1.13", since: "C" },
  { op: "unbind", eip: "192.168.18.101", vmi: "10.244.1.11" },
  { op: "bind", eip: "192.168.18.103", vmi: "10.244.1.11", since: "D" },
];

/** The table after the first n changes, sorted, as a plain model. */
function model(n: number): HeldBinding[] {
  const table = new Map(SNAPSHOT.map((b) => [b.eip, b]));
  for (const c of CHANGES.slice(0, n)) {
    if (c.op === "unbind") table.delete(c.eip);
    else table.set(c.eip, { eip: c.eip, vmi: c.vmi, since: c.since });
  }
  return sorted([...table.values()]);
}

function sorted(bindings: readonly HeldBinding[]): HeldBinding[] {
  return [...bindings].sort((a, b) => (a.eip < b.eip ? -1 : 1));
}

/** Saves SNAPSHOT, then records CHANGES one at a time; returns the journal size after each. */
async function acknowledged(store: BindingStore): Promise<number[]> {
  await store.save(SNAPSHOT);
  const ends: number[] = [];
  for (let i = 0; i < CHANGES.length; i++) {
    await store.record(CHANGES.slice(i, i + 1), model(i + 1));
    ends.push((await readFile(store.journalPath)).length);
  }
  return ends;
}

test("a journal cut at any byte loses no change acknowledged before the cut", () =>
  withDir(async (dir) => {
    const store = new BindingStore(join(dir, "state"));
    const ends = await acknowledged(store);
    const full = await readFile(store.journalPath);
    assert.equal(full.length, ends.at(-1));
    for (let offset = 0; offset <= full.length; offset++) {
      await writeFile(store.journalPath, full.subarray(0, offset));
      // Acknowledged before a crash at this offset: the changes whose line ended by then.
      const acked = ends.filter((end) => end <= offset).length;
      const loaded = await new BindingStore(store.dir).load().then(
        (b) => sorted(b ?? []),
        (err: unknown) => err,
      );
      if (loaded instanceof StateError) continue;
      assert.ok(Array.isArray(loaded), `offset ${offset}: ${String(loaded)}`);
      // A line cut just before its newline is whole: it may count (it was never answered).
      const allowed = [model(acked), model(Math.min(acked + 1, CHANGES.length))];
      assert.ok(
        allowed.some((m) => JSON.stringify(m) === JSON.stringify(loaded)),
        `offset ${offset}: loaded ${JSON.stringify(loaded)}, acknowledged ${JSON.stringify(model(acked))}`,
      );
    }
  }));

test("a compaction stopped between write and rename, or before the journal is emptied, loses nothing", () =>
  withDir(async (dir) => {
    const store = new BindingStore(join(dir, "state"));
    await acknowledged(store);
    const journal = await readFile(store.journalPath);
    const oldSnapshot = await readFile(store.path);
    // The next compaction writes its temporary file, then dies before the rename.
    await store.save(model(CHANGES.length));
    await copyFile(store.path, `${store.path}.4242.tmp`);
    await writeFile(store.path, oldSnapshot);
    await writeFile(store.journalPath, journal);
    assert.deepEqual(
      sorted((await new BindingStore(store.dir).load()) ?? []),
      model(CHANGES.length),
    );
    await unlink(`${store.path}.4242.tmp`);
    // It renamed the new snapshot, then died before emptying the journal (an older generation).
    await new BindingStore(store.dir).save(model(CHANGES.length));
    await writeFile(store.journalPath, journal);
    assert.deepEqual(
      sorted((await new BindingStore(store.dir).load()) ?? []),
      model(CHANGES.length),
    );
  }));

test("a deleted snapshot next to a journal, or an unreadable file, refuses to load", () =>
  withDir(async (dir) => {
    const store = new BindingStore(join(dir, "state"));
    await acknowledged(store);
    const snapshot = await readFile(store.path);
    await unlink(store.path);
    await assert.rejects(new BindingStore(store.dir).load(), (err: unknown) => {
      assert.ok(err instanceof StateError);
      assert.match(err.message, /bindings\.journal exists but .*bindings\.json is missing/);
      return true;
    });
    // An empty journal (just compacted) next to a lost snapshot: still refused.
    await truncate(store.journalPath, 0);
    await assert.rejects(new BindingStore(store.dir).load(), StateError);
    // A snapshot that is a directory (cannot be read): refused too.
    await rm(store.path, { recursive: true, force: true });
    await writeFile(store.journalPath, "");
    await mkdir(store.path);
    await assert.rejects(new BindingStore(store.dir).load(), /cannot read .*bindings\.json/);
    await rm(store.path, { recursive: true });
    await writeFile(store.path, snapshot);
    assert.ok((await new BindingStore(store.dir).load()) !== undefined);
    // Neither file: nothing was ever saved here.
    await unlink(store.path);
    await unlink(store.journalPath);
    assert.equal(await new BindingStore(store.dir).load(), undefined);
  }));
