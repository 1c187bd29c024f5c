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
    assert.deepEqual(await readdir(join(dir, "state")), ["bindings.json"]);
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
      bindings: [{ eip: "1.1.1.1", vmi: "10.0.0.1", since: "S" }],
    });
  }));
