import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BindingStore, StateError } from "./store.js";
import { scanSeedState } from "./seed-state.js";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "keip-store-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test("saves and loads bindings, leaving no temporary file", () =>
  withDir(async (dir) => {
    const store = new BindingStore(join(dir, "state"));
    assert.equal(await store.load(), undefined, "nothing saved yet");
    const b = [{ eip: "192.168.18.100", vmi: "10.244.1.10", since: "2026-01-01T00:00:00.000Z" }];
    await Promise.all([store.save([]), store.save(b)]);
    assert.deepEqual(await store.load(), b, "the later of two concurrent saves wins");
    assert.deepEqual((await readdir(join(dir, "state"))).sort(), [
      "bindings.journal",
      "bindings.json",
    ]);
  }));

test("a damaged state file stops the agent instead of losing bindings", () =>
  withDir(async (dir) => {
    const store = new BindingStore(dir);
    for (const body of [
      "{",
      '{"version":1,"bindings":[{"eip":"x","vmi":"10.0.0.1"}]}',
      '{"version":9,"bindings":[]}',
      '{"version":1,"bindings":[{"eip":"1.1.1.1","vmi":"10.0.0.1"},{"eip":"1.1.1.1","vmi":"10.0.0.2"}]}',
    ]) {
      await writeFile(store.path, body);
      await assert.rejects(store.load(), StateError, body);
    }
  }));

test("adopts the seed's Finished bindings and says why it skips the others", () =>
  withDir(async (dir) => {
    const put = (name: string, doc: unknown) =>
      writeFile(join(dir, name), typeof doc === "string" ? doc : JSON.stringify(doc));
    await put("eip-192.168.18.100-10.244.1.10.metadata", {
      status: "Finished",
      exip: "192.168.18.100",
      inip: "10.244.1.10",
      phase: 5,
    });
    await put("eip-192.168.18.101-10.244.1.11.metadata", {
      status: "Failed",
      exip: "192.168.18.101",
      inip: "10.244.1.11",
      phase: 2,
    });
    await put("eip-192.168.18.102-10.244.1.12.metadata", "not json");
    await put("eip-192.168.18.103-10.244.1.10.metadata", {
      status: "Finished",
      exip: "192.168.18.103",
      inip: "10.244.1.10",
      phase: 5,
    });
    await put("unrelated.txt", "x");
    const scan = await scanSeedState(dir);
    assert.deepEqual(scan.adopted, [{ eip: "192.168.18.100", vmi: "10.244.1.10" }]);
    assert.equal(scan.skipped.length, 3);
    assert.match(
      scan.skipped.map((s) => s.reason).join("\n"),
      /"Failed"[\s\S]*unreadable[\s\S]*already adopted/,
    );
    assert.deepEqual(await scanSeedState(join(dir, "missing")), { adopted: [], skipped: [] });
  }));

test("the state file is plain JSON a person can read", () =>
  withDir(async (dir) => {
    await mkdir(dir, { recursive: true });
    const store = new BindingStore(dir);
    await store.save([{ eip: "1.1.1.1", vmi: "10.0.0.1", since: "S" }]);
    assert.deepEqual(JSON.parse(await readFile(store.path, "utf8")), {
      version: 1,
      generation: 1,
      bindings: [{ eip: "1.1.1.1", vmi: "10.0.0.1", since: "S" }],
    });
  }));

test("changes go to the journal, and load replays them on top of the snapshot", () =>
  withDir(async (dir) => {
    const store = new BindingStore(dir);
    const a = { eip: "1.1.1.1", vmi: "10.0.0.1", since: "A" };
    await store.save([a]);
    await store.record([{ op: "bind", eip: "1.1.1.2", vmi: "10.0.0.2", since: "B" }], []);
    await store.record(
      [
        { op: "unbind", eip: "1.1.1.1", vmi: "10.0.0.1" },
        { op: "bind", eip: "1.1.1.3", vmi: "10.0.0.1", since: "C" },
      ],
      [],
    );
    assert.equal((await readFile(store.journalPath, "utf8")).split("\n").length, 4);
    const loaded = await new BindingStore(dir).load();
    assert.deepEqual(
      loaded?.sort((x, y) => (x.eip < y.eip ? -1 : 1)),
      [
        { eip: "1.1.1.2", vmi: "10.0.0.2", since: "B" },
        { eip: "1.1.1.3", vmi: "10.0.0.1", since: "C" },
      ],
    );
  }));

test("a torn last journal line is dropped; a damaged earlier one stops the load", () =>
  withDir(async (dir) => {
    const store = new BindingStore(dir);
    await store.save([]);
    await store.record([{ op: "bind", eip: "1.1.1.2", vmi: "10.0.0.2", since: "B" }], []);
    const good = await readFile(store.journalPath, "utf8");
    await writeFile(store.journalPath, good + '{"g":1,"op":"bind","eip":"1.1');
    assert.deepEqual(
      (await new BindingStore(dir).load())?.map((b) => b.eip),
      ["1.1.1.2"],
    );
    await writeFile(store.journalPath, '{"g":1,"op":"bi\n' + good);
    await assert.rejects(new BindingStore(dir).load(), /line 1 is damaged/);
  }));

test("a compaction cut short leaves old journal lines that are ignored", () =>
  withDir(async (dir) => {
    const store = new BindingStore(dir);
    await store.save([]);
    await store.record([{ op: "bind", eip: "1.1.1.2", vmi: "10.0.0.2", since: "B" }], []);
    const oldJournal = await readFile(store.journalPath, "utf8");
    await store.save([{ eip: "1.1.1.9", vmi: "10.0.0.9", since: "Z" }]);
    await writeFile(store.journalPath, oldJournal); // as if the crash came before truncation
    assert.deepEqual(
      (await new BindingStore(dir).load())?.map((b) => b.eip),
      ["1.1.1.9"],
    );
  }));

test("the journal is compacted into a snapshot when it outgrows the table", () =>
  withDir(async (dir) => {
    const store = new BindingStore(dir);
    await store.save([]);
    for (let i = 0; i < 1030; i++) {
      const eip = `1.1.${i >> 8}.${i & 255}`;
      await store.record(
        [{ op: "bind", eip, vmi: "10.0.0.1", since: "S" }],
        [{ eip, vmi: "10.0.0.1", since: "S" }],
      );
    }
    const journal = await readFile(store.journalPath, "utf8");
    assert.ok(journal.split("\n").length < 20, "compacted");
    assert.deepEqual(
      (await new BindingStore(dir).load())?.map((b) => b.eip),
      ["1.1.4.5"],
    );
  }));
