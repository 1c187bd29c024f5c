import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { CommandRunner } from "../kernel/runner.js";
import { FakeClock } from "../common/fake-clock.js";
import { GratuitousArp } from "./garp.js";

const silent = pino({ level: "silent" });

/** Records each arp-scan round as its sorted stdin targets. */
function recorder(options: { failFirst?: boolean } = {}) {
  const rounds: string[][] = [];
  const args: string[][] = [];
  const commands: string[] = [];
  const runner: CommandRunner = {
    // No assertion in here: send() catches and logs every error, so a failed assertion
    // would pass unnoticed. Record, and let the test assert.
    async run(command, a, opts) {
      commands.push(command);
      args.push([...a]);
      rounds.push((opts?.input ?? "").split("\n").filter(Boolean).sort());
      await Promise.resolve();
      if (options.failFirst && rounds.length === 1) throw new Error("arp-scan: boom");
      return { stdout: "", stderr: "" };
    },
  };
  return { runner, rounds, args, commands };
}

test("one arp-scan per round for every EIP due, `count` rounds, a failure only logged", async () => {
  const { runner, rounds, args, commands } = recorder({ failFirst: true });
  const clock = new FakeClock();
  const garp = new GratuitousArp(runner, silent, { device: "eth1", count: 3, roundMs: 20, clock });
  garp.announce(["192.168.18.10", "192.168.18.11"]);
  assert.deepEqual(rounds, [], "the first round waits for a later turn");
  await clock.advance(0);
  assert.equal(rounds.length, 1, "the first round at once");
  await clock.advance(19);
  assert.equal(rounds.length, 1, "the next one a round later");
  await clock.advance(1);
  assert.equal(rounds.length, 2);
  await clock.advance(1000);
  await garp.idle();
  assert.deepEqual(rounds, [
    ["192.168.18.10", "192.168.18.11"],
    ["192.168.18.10", "192.168.18.11"],
    ["192.168.18.10", "192.168.18.11"],
  ]);
  assert.deepEqual(commands, ["arp-scan", "arp-scan", "arp-scan"]);
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
  const clock = new FakeClock();
  const garp = new GratuitousArp(runner, silent, { device: "eth1", count: 3, roundMs: 30, clock });
  garp.announce(["192.168.18.10", "192.168.18.11"]);
  await clock.advance(15); // after the first round
  garp.withdraw(["192.168.18.11"]);
  garp.announce(["192.168.18.12"]);
  await clock.advance(1000);
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
  const clock = new FakeClock();
  const garp = new GratuitousArp(runner, silent, { device: "eth1", count: 3, clock });
  garp.announce(["192.168.18.10"]);
  garp.withdraw(["192.168.18.10"]);
  await garp.idle();
  await clock.advance(10_000);
  assert.deepEqual(rounds, []);
});

test("count 0 sends nothing", async () => {
  const { runner, commands } = recorder();
  const clock = new FakeClock();
  const garp = new GratuitousArp(runner, silent, { device: "eth1", count: 0, clock });
  garp.announce(["192.168.18.10"]);
  await clock.advance(10_000);
  await garp.idle();
  assert.deepEqual(commands, [], "no command ran");
});
