import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { CommandRunner } from "../kernel/runner.js";
import { GratuitousArp } from "./garp.js";

test("one arping per EIP, at most `concurrency` at once, failures only logged", async () => {
  const calls: string[] = [];
  let running = 0;
  let most = 0;
  const runner: CommandRunner = {
    async run(command, args) {
      calls.push([command, ...args].join(" "));
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      if (args.includes("192.168.18.13")) throw new Error("arping: boom");
      return { stdout: "", stderr: "" };
    },
  };
  const garp = new GratuitousArp(runner, pino({ level: "silent" }), {
    device: "eth1",
    count: 3,
    concurrency: 2,
  });
  garp.announce(["192.168.18.10", "192.168.18.11", "192.168.18.12", "192.168.18.13"]);
  await garp.idle();
  assert.equal(most, 2);
  assert.deepEqual(
    calls.sort(),
    [10, 11, 12, 13].map((n) => `arping -U -c 3 -I eth1 192.168.18.${n}`),
  );
});

test("count 0 sends nothing", async () => {
  const garp = new GratuitousArp(
    { run: () => assert.fail("no command expected") },
    pino({ level: "silent" }),
    { device: "eth1", count: 0 },
  );
  garp.announce(["192.168.18.10"]);
  await garp.idle();
});
