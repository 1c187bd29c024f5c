import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { ConntrackCleaner, checkTcpLoose } from "./conntrack.js";
import { FakeRunner } from "./fake-runner.js";
import { CommandError } from "./runner.js";

test("forgets the flows of EIPs that left or changed VMI, after they did, and only those", async () => {
  const runner = new FakeRunner().on(
    (c) => c.command === "conntrack",
    new CommandError(
      "conntrack",
      [],
      1,
      "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n",
    ),
  );
  const cleaner = new ConntrackCleaner(runner, pino({ level: "silent" }));
  const a = { eip: "192.168.18.100", vmi: "10.244.1.10" };
  const b = { eip: "192.168.18.101", vmi: "10.244.1.11" };
  assert.equal(await cleaner.sync([a, b]), 0, "the first sync knows of nothing gone");
  assert.equal(await cleaner.sync([a, b]), 0);
  assert.deepEqual(runner.lines(), []);
  assert.equal(await cleaner.sync([a, { ...b, vmi: "10.244.1.30" }]), 1, "b's VMI changed");
  await cleaner.idle();
  assert.deepEqual(runner.lines(), [
    "conntrack -D --orig-dst 192.168.18.101",
    "conntrack -D --reply-dst 192.168.18.101",
  ]);
  runner.clear();
  assert.equal(await cleaner.sync([]), 2);
  await cleaner.idle();
  assert.deepEqual(runner.lines().sort(), [
    "conntrack -D --orig-dst 192.168.18.100",
    "conntrack -D --orig-dst 192.168.18.101",
    "conntrack -D --reply-dst 192.168.18.100",
    "conntrack -D --reply-dst 192.168.18.101",
  ]);
});

test("checkTcpLoose warns when nf_conntrack_tcp_loose is 0, and only then", async () => {
  const said = async (read: () => Promise<string[]>) => {
    const lines: string[] = [];
    const logger = pino({ level: "debug" }, { write: (l: string) => lines.push(l) });
    const keys: (readonly string[])[] = [];
    await checkTcpLoose({ read: (k) => (keys.push(k), read()) }, logger);
    assert.deepEqual(keys, [["net/netfilter/nf_conntrack_tcp_loose"]]);
    return lines.map((l) => JSON.parse(l) as { level: number; msg: string });
  };
  const warned = await said(async () => ["0"]);
  assert.equal(warned.length, 1);
  assert.equal(warned[0]?.level, 40);
  assert.match(warned[0]?.msg ?? "", /^nf_conntrack_tcp_loose is 0: /);
  assert.deepEqual(await said(async () => ["1"]), []);
  const unread = await said(() => Promise.reject(new Error("ENOENT")));
  assert.deepEqual(
    unread.map((l) => l.level),
    [20],
    "unreadable: debug only",
  );
});
