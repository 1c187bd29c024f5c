// The apply loop with fake subsystems: background re-reads, drift accounting, and what
// happens when an apply races a re-read.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { KernelError, Phase } from "../kernel/manager.js";
import { BindingTable } from "./binding-table.js";
import { Dataplane } from "./dataplane.js";
import type { Subsystem } from "../kernel/subsystem.js";
import { AgentMetrics } from "./metrics.js";
import { TEST_PLAN_CONFIG } from "../model/test-plan-config.js";
import type { DesiredState } from "../model/desired.js";

class Recorder implements Subsystem {
  readonly name = "recorder";
  readonly owns = "nothing";
  readonly stage = "kernel";
  readonly events: string[] = [];
  reads = 0;
  /** Changes the next sync reports (drift found). */
  drift = 0;
  /** While set, read() waits for it. */
  readBlocked: Promise<void> | undefined;
  async sync(_d: DesiredState, o: { reread: boolean }): Promise<number> {
    this.events.push(o.reread ? "sync+reread" : "sync");
    const n = this.drift;
    this.drift = 0;
    return n;
  }
  async read(): Promise<unknown> {
    this.reads++;
    await this.readBlocked;
    return `snapshot-${this.reads}`;
  }
  adopt(snapshot: unknown): void {
    this.events.push(`adopt ${String(snapshot)}`);
  }
}

function setup() {
  const recorder = new Recorder();
  const metrics = new AgentMetrics();
  const table = new BindingTable();
  const dataplane = new Dataplane({
    table,
    store: { save: async () => {}, record: async () => {} },
    config: TEST_PLAN_CONFIG,
    subsystems: [recorder],
    logger: pino({ level: "silent" }),
    metrics,
  });
  return { recorder, metrics, table, dataplane };
}

async function driftRepairs(metrics: AgentMetrics): Promise<number> {
  return (await metrics.driftRepairs.get()).values[0]?.value ?? 0;
}

test("a background re-read is adopted and what drifted is written and counted", async () => {
  const { recorder, metrics, dataplane } = setup();
  await dataplane.resync();
  recorder.events.length = 0;
  recorder.drift = 3;
  await dataplane.backgroundResync();
  assert.deepEqual(recorder.events, ["adopt snapshot-1", "sync"]);
  assert.equal(await driftRepairs(metrics), 3);
  await dataplane.stop();
});

test("a re-read spoiled by a concurrent apply is dropped, and the next round reads again", async () => {
  const { recorder, table, dataplane } = setup();
  await dataplane.resync();
  recorder.events.length = 0;
  let open!: () => void;
  recorder.readBlocked = new Promise((r) => (open = r));
  const resync = dataplane.backgroundResync();
  await new Promise((r) => setImmediate(r));
  table.propose({ action: "bind", binding: { eip: "192.168.18.5", vmi: "10.0.0.5" } }, "T");
  await dataplane.sync(); // an apply while the first read is under way
  recorder.readBlocked = undefined;
  open();
  await resync;
  assert.equal(recorder.reads, 1);
  assert.deepEqual(recorder.events, ["sync"], "the stale snapshot was not adopted");
  await dataplane.backgroundResync();
  assert.deepEqual(recorder.events, ["sync", "adopt snapshot-2", "sync"]);
  await dataplane.stop();
});

test("a node too busy for background reads gets its re-read inside the loop", async () => {
  const { recorder, table, dataplane } = setup();
  await dataplane.resync();
  recorder.events.length = 0;
  const realRead = recorder.read.bind(recorder);
  let n = 0;
  recorder.read = async () => {
    // Every read races an apply.
    table.propose(
      { action: "bind", binding: { eip: `192.168.18.${10 + n}`, vmi: `10.0.0.${10 + n}` } },
      "T",
    );
    n++;
    await dataplane.sync();
    return realRead();
  };
  for (let round = 0; round < 4; round++) await dataplane.backgroundResync();
  assert.equal(n, 3, "three spoiled rounds, then the loop re-read without a background read");
  assert.equal(recorder.events.at(-1), "sync+reread");
  assert.ok(!recorder.events.some((e) => e.startsWith("adopt")));
  await dataplane.stop();
});

test("an announcer withdraws before the kernel is written and announces after it", async () => {
  const events: string[] = [];
  const kernel: Subsystem = {
    name: "kernel",
    owns: "nothing",
    stage: "kernel",
    sync: async () => (events.push("kernel"), 0),
    read: async () => undefined,
    adopt: () => {},
  };
  let fail = false;
  const announcer: Subsystem = {
    name: "bgp",
    owns: "nothing",
    stage: "announce",
    withdraw: async () => (events.push("withdraw"), 0),
    sync: async () => {
      events.push("announce");
      if (fail) throw new KernelError(Phase.Bgp, "speaker down");
      return 0;
    },
    read: async () => undefined,
    adopt: () => {},
  };
  const table = new BindingTable();
  const dataplane = new Dataplane({
    table,
    store: { save: async () => {}, record: async () => {} },
    config: TEST_PLAN_CONFIG,
    subsystems: [announcer, kernel],
    logger: pino({ level: "silent" }),
    metrics: new AgentMetrics(),
    retryBaseMs: 60_000,
  });
  await dataplane.sync();
  assert.deepEqual(events, ["withdraw", "kernel", "announce"]);
  events.length = 0;
  fail = true;
  await assert.rejects(
    dataplane.sync(),
    (err: unknown) => err instanceof KernelError && err.phase === Phase.Bgp,
  );
  assert.deepEqual(events, ["withdraw", "kernel", "announce"], "the kernel is written anyway");
  await dataplane.stop();
});

test("an EIP is answered once its NAT is written, and no longer before its NAT goes", async () => {
  const log: string[] = [];
  // The NAT subsystem logs the bindings it is asked to hold, the gate the EIPs it answers.
  const subsystem = (name: string, gate: boolean): Subsystem => ({
    name,
    owns: "nothing",
    stage: "kernel",
    ...(gate ? { gate: true as const } : {}),
    sync: async (d) => {
      const eips = gate ? (d.arpProxy?.eips ?? d.gatewayAddresses) : d.bound.map((b) => b.eip);
      log.push(`${name} [${eips.join(" ")}]`);
      return 0;
    },
    read: async () => undefined,
    adopt: () => {},
  });
  const table = new BindingTable();
  const dataplane = new Dataplane({
    table,
    store: { save: async () => {}, record: async () => {} },
    config: TEST_PLAN_CONFIG,
    subsystems: [subsystem("answers", true), subsystem("nat", false)],
    logger: pino({ level: "silent" }),
    metrics: new AgentMetrics(),
  });
  const change = (action: "bind" | "unbind", eip: string, vmi: string) => {
    table.propose({ action, binding: { eip, vmi } }, "T");
    return dataplane.sync();
  };
  // The first apply knows nothing held: it writes everything at once.
  await change("bind", "192.168.18.5", "10.0.0.5");
  assert.deepEqual(log.splice(0), ["nat [192.168.18.5]", "answers [192.168.18.5]"]);
  await change("bind", "192.168.18.6", "10.0.0.6");
  assert.deepEqual(log.splice(0), [
    "nat [192.168.18.5 192.168.18.6]",
    "answers [192.168.18.5]",
    "answers [192.168.18.5 192.168.18.6]",
  ]);
  await change("unbind", "192.168.18.5", "10.0.0.5");
  assert.deepEqual(log.splice(0), ["answers [192.168.18.6]", "nat [192.168.18.6]"]);
  await dataplane.stop();
});
