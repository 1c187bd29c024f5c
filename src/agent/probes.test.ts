// The agent's probes as the apply loop answers them: /readyz (restored and in sync, or why
// not) and /healthz (the loop makes progress), with a subsystem that fails or hangs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { KernelError, Phase } from "../kernel/manager.js";
import { BindingTable } from "./binding-table.js";
import { realClock } from "../common/clock.js";
import { Dataplane } from "./dataplane.js";
import type { Subsystem } from "../kernel/subsystem.js";
import { AgentMetrics } from "./metrics.js";
import { TEST_PLAN_CONFIG } from "../model/test-plan-config.js";

/** A subsystem that fails while `failure` is set and waits while `blocked` is set. */
class Controlled implements Subsystem {
  readonly name = "controlled";
  readonly owns = "nothing";
  readonly stage = "kernel";
  failure: KernelError | undefined;
  blocked: Promise<void> | undefined;
  async sync(): Promise<number> {
    await this.blocked;
    if (this.failure) throw this.failure;
    return 0;
  }
  async read(): Promise<unknown> {
    return undefined;
  }
  adopt(): void {}
}

/** The real clock's timers, with its now() set by the test. */
function setup(now: () => number = Date.now) {
  const subsystem = new Controlled();
  const dataplane = new Dataplane({
    table: new BindingTable(),
    store: { save: async () => {}, record: async () => {} },
    config: TEST_PLAN_CONFIG,
    subsystems: [subsystem],
    logger: pino({ level: "silent" }),
    metrics: new AgentMetrics(),
    retryBaseMs: 1,
    retryMaxMs: 1,
    clock: { ...realClock, now },
  });
  return { subsystem, dataplane };
}

test("not ready until the kernel is restored; then ready", async () => {
  const { dataplane } = setup();
  assert.equal(dataplane.notReady(), "restoring the kernel state from the bindings");
  await dataplane.resync();
  assert.equal(dataplane.notReady(), undefined);
  await dataplane.stop();
});

test("not ready with the failing phase and error while it retries; ready once a retry works", async () => {
  const { subsystem, dataplane } = setup();
  await dataplane.resync();
  subsystem.failure = new KernelError(
    Phase.PolicyRouting,
    "ip -batch - failed (timed out after 500 ms, killed): no error output",
  );
  await assert.rejects(dataplane.sync(), { phase: Phase.PolicyRouting });
  assert.match(
    dataplane.notReady() ?? "",
    /^retrying after \d+ failed apply\(s\): phase 3: ip -batch - failed \(timed out after 500 ms, killed\)/,
  );
  assert.equal(dataplane.stalled(60_000), undefined, "a loop that retries is alive");
  subsystem.failure = undefined;
  await dataplane.sync();
  assert.equal(dataplane.notReady(), undefined);
  await dataplane.stop();
});

test("not alive once one apply runs past the stall limit; alive again when it ends", async () => {
  let now = 1_000_000;
  const { subsystem, dataplane } = setup(() => now);
  await dataplane.resync();
  let release!: () => void;
  subsystem.blocked = new Promise((r) => (release = r));
  const synced = dataplane.sync();
  await new Promise((r) => setImmediate(r));
  now += 60_000;
  assert.equal(dataplane.stalled(60_000), undefined, "exactly at the limit: still alive");
  now += 1;
  assert.equal(dataplane.stalled(60_000), "an apply has been running for 60 s");
  subsystem.blocked = undefined;
  release();
  await synced;
  assert.equal(dataplane.stalled(60_000), undefined);
  await dataplane.stop();
});
