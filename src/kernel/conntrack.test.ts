import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { ConntrackCleaner } from "./conntrack.js";
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
