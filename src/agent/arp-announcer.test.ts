import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { ArpArrivals } from "../kernel/arp-arrivals.js";
import type { CommandRunner } from "../kernel/runner.js";
import { FakeClock } from "../common/fake-clock.js";
import { ArpAnnouncer } from "./arp-announcer.js";
import { GratuitousArp } from "./garp.js";

function setup() {
  const rounds: string[][] = [];
  const runner: CommandRunner = {
    async run(_command, _args, opts) {
      rounds.push((opts?.input ?? "").split("\n").filter(Boolean).sort());
      await Promise.resolve();
      return { stdout: "", stderr: "" };
    },
  };
  const clock = new FakeClock();
  const garp = new GratuitousArp(runner, pino({ level: "silent" }), {
    device: "eth1",
    count: 2,
    roundMs: 10,
    clock,
  });
  const arrivals = new ArpArrivals();
  return { rounds, clock, garp, arrivals, announcer: new ArpAnnouncer(garp, arrivals) };
}

test("announces by gratuitous ARP only what the kernel's write brought, and reports no change", async () => {
  const { rounds, clock, garp, arrivals, announcer } = setup();
  const held = ["192.168.18.10", "192.168.18.11"];
  // A restart that found 192.168.18.10 in place: only 192.168.18.11 arrived.
  arrivals.add(["192.168.18.11"]);
  assert.equal(await announcer.withdraw(held), 0);
  assert.equal(await announcer.announce(), 0);
  assert.equal(announcer.status().announced, 1);
  await clock.advance(0);
  await clock.advance(10);
  await garp.idle();
  assert.deepEqual(rounds, [["192.168.18.11"], ["192.168.18.11"]]);
  assert.equal(await announcer.announce(), 0);
  await garp.idle();
  assert.equal(rounds.length, 2, "nothing arrived since: nothing sent");
});

test("withdraw stops the announcements of an EIP the node no longer holds", async () => {
  const { rounds, clock, garp, arrivals, announcer } = setup();
  arrivals.add(["192.168.18.10", "192.168.18.11"]);
  await announcer.announce();
  await clock.advance(0);
  assert.deepEqual(rounds, [["192.168.18.10", "192.168.18.11"]]);
  // 192.168.18.11 moved to another node before its second announcement.
  await announcer.withdraw(["192.168.18.10"]);
  assert.equal(announcer.status().announced, 1);
  await clock.advance(10);
  await garp.idle();
  assert.deepEqual(rounds[1], ["192.168.18.10"]);
});
