import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { CommandRunner } from "../kernel/runner.js";
import { GratuitousArp } from "./garp.js";

const silent = pino({ level: "silent" });

/** Records each arp-scan round as its sorted stdin targets. */
function recorder(options: { failFirst?: boolean } = {}) {
  const rounds: string[][] = [];
  const args: string[][] = [];
  const runner: CommandRunner = {
    async run(command, a, opts) {
      assert.equal(command, "arp-scan");
      args.push([...a]);
      rounds.push((opts?.input ?? "").split("\n").filter(Boolean).sort());
      await new Promise((r) => setTimeout(r, 2));
      if (options.failFirst && rounds.length === 1) throw new Error("arp-scan: boom");
      return { stdout: "", stderr: "" };
    },
  };
  return { runner, rounds, args };
}

test("one arp-scan per round for every EIP due, `count` rounds, a failure only logged", async () => {
  const { runner, rounds, args } = recorder({ failFirst: true });
  const garp = new GratuitousArp(runner, silent, { device: "eth1", count: 3, roundMs: 20 });
  garp.announce(["192.168.18.10", "192.168.18.11"]);
  await garp.idle();
  assert.deepEqual(rounds, [
    ["192.168.18.10", "192.168.18.11"],
    ["192.168.18.10", "192.168.18.11"],
    ["192.168.18.10", "192.168.18.11"],
  ]);
  assert.deepEqual(args[0], [
    "--interface=eth1",
    "--arpspa=dest",
    "--retry=1",
    "--interval=1",
    "--timeout=100",
    "--quiet",
    "--plain",
    "--file=-",
  ]);
});

test("an EIP that leaves is not announced any more; one that arrives later joins", async () => {
  const { runner, rounds } = recorder();
  const garp = new GratuitousArp(runner, silent, { device: "eth1", count: 3, roundMs: 30 });
  garp.announce(["192.168.18.10", "192.168.18.11"]);
  await new Promise((r) => setTimeout(r, 15)); // after the first round
  garp.withdraw(["192.168.18.11"]);
  garp.announce(["192.168.18.12"]);
  await garp.idle();
  assert.deepEqual(rounds, [
    ["192.168.18.10", "192.168.18.11"],
    ["192.168.18.12"],
    ["192.168.18.10"],
    ["192.168.18.12"],
    ["192.168.18.10"],
    ["192.168.18.12"],
  ]);
});

test("withdrawn before the first round: nothing is sent", async () => {
  const { runner, rounds } = recorder();
  const garp = new GratuitousArp(runner, silent, { device: "eth1", count: 3 });
  garp.announce(["192.168.18.10"]);
  garp.withdraw(["192.168.18.10"]);
  await garp.idle();
  assert.deepEqual(rounds, []);
});

test("count 0 sends nothing", async () => {
  const garp = new GratuitousArp({ run: () => assert.fail("no command expected") }, silent, {
    device: "eth1",
    count: 0,
  });
  garp.announce(["192.168.18.10"]);
  await garp.idle();
});
