import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { KubeApiError, type RequestOptions, type ResourceRef } from "./client.js";
import { FakeClock } from "../common/fake-clock.js";
import { LeaderElector, type Lease, type LeaseClient } from "./leader.js";

const silent = pino({ level: "silent" });
const NS = "kube-eip";
const NAME = "eip-operator";

/**
 * One Lease in memory with the apiserver's optimistic concurrency: a PUT with a stale
 * resourceVersion is a Conflict, a second create an AlreadyExists. `mode` makes it fail
 * every request, or never answer (until the request's signal aborts).
 */
class FakeLeases implements LeaseClient {
  lease: Lease | undefined;
  private rv = 0;
  mode: "up" | "down" | "hang" = "up";
  writes = 0;

  private gate(req: RequestOptions): Promise<void> {
    if (this.mode === "down") return Promise.reject(new Error("connect ECONNREFUSED"));
    if (this.mode === "hang") {
      return new Promise((_, reject) =>
        req.signal?.addEventListener("abort", () => reject(new Error("aborted")), { once: true }),
      );
    }
    return Promise.resolve();
  }

  async get<T>(_ref: ResourceRef, _ns: unknown, _name: string, req: RequestOptions = {}) {
    await this.gate(req);
    if (!this.lease) throw new KubeApiError(404, "NotFound", "leases not found");
    return structuredClone(this.lease) as T;
  }

  async create<T>(_ref: ResourceRef, _ns: unknown, obj: unknown, req: RequestOptions = {}) {
    await this.gate(req);
    if (this.lease) throw new KubeApiError(409, "AlreadyExists", "exists");
    return this.store(obj as Lease) as T;
  }

  async replace<T>(
    _ref: ResourceRef,
    _ns: unknown,
    _name: string,
    obj: unknown,
    _opts: unknown,
    req: RequestOptions = {},
  ) {
    await this.gate(req);
    const lease = obj as Lease;
    if (lease.metadata.resourceVersion !== this.lease?.metadata.resourceVersion) {
      throw new KubeApiError(409, "Conflict", "the object has been modified");
    }
    return this.store(lease) as T;
  }

  private store(lease: Lease): Lease {
    this.writes++;
    this.lease = structuredClone({
      ...lease,
      metadata: { ...lease.metadata, resourceVersion: String(++this.rv) },
    });
    return structuredClone(this.lease);
  }

  get holder(): string | undefined {
    return this.lease?.spec?.holderIdentity;
  }
}

/** A candidate with client-go's timing (the defaults): Lease 15 s, renew deadline 10 s, retry 2 s. */
function candidate(
  leases: FakeLeases,
  clock: FakeClock,
  identity: string,
  work?: (signal: AbortSignal) => Promise<void>,
) {
  const log: string[] = [];
  let signal: AbortSignal | undefined;
  const elector = new LeaderElector(
    leases,
    {
      namespace: NS,
      name: NAME,
      identity,
      logger: silent,
      clock,
      random: () => 0.5,
    },
    {
      onStartedLeading: (s) => {
        signal = s;
        log.push("started");
        return work?.(s);
      },
      onStoppedLeading: () => log.push(`stopped (signal aborted: ${signal?.aborted})`),
      onNewLeader: (id) => log.push(`leader ${id}`),
    },
  );
  let ended = false;
  const run = elector.run().then(() => void (ended = true));
  return { elector, log, run, ended: () => ended };
}

test("acquires a missing Lease at once and renews it every retry period", async () => {
  const clock = new FakeClock();
  const leases = new FakeLeases();
  const a = candidate(leases, clock, "a");
  await clock.advance(0);
  assert.equal(a.elector.isLeader, true);
  assert.deepEqual(a.log, ["leader a", "started"]);
  assert.equal(leases.holder, "a");
  assert.equal(leases.lease?.spec?.leaseDurationSeconds, 15);
  assert.equal(leases.lease?.spec?.leaseTransitions, 0);
  assert.match(leases.lease?.spec?.renewTime ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  const acquired = leases.lease?.spec?.acquireTime;

  const renewTimes = new Set<string>();
  for (let i = 0; i < 5; i++) {
    await clock.advance(2000);
    renewTimes.add(leases.lease?.spec?.renewTime ?? "");
  }
  assert.equal(renewTimes.size, 5, "a new renewTime every 2 s");
  assert.equal(leases.lease?.spec?.acquireTime, acquired, "acquireTime kept while renewing");
  assert.equal(a.elector.isLeader, true);
  await a.elector.stop();
});

test("never takes a Lease another candidate keeps renewing", async () => {
  const clock = new FakeClock();
  const leases = new FakeLeases();
  const a = candidate(leases, clock, "a");
  await clock.advance(0);
  const b = candidate(leases, clock, "b");
  for (let i = 0; i < 120; i++) await clock.advance(1000);
  assert.equal(a.elector.isLeader, true);
  assert.equal(b.elector.isLeader, false);
  assert.deepEqual(b.log, ["leader a"]);
  assert.equal(leases.holder, "a");
  await b.elector.stop();
  await a.elector.stop();
});

/** A Lease a crashed process left behind; its renewTime is old by any clock. */
function abandoned(leases: FakeLeases, renewTime = "2001-01-01T00:00:00.000000Z"): void {
  leases.lease = {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: { name: NAME, namespace: NS, resourceVersion: "100" },
    spec: { holderIdentity: "ghost", leaseDurationSeconds: 15, renewTime, leaseTransitions: 3 },
  };
}

test("takes over a Lease whose record stood still for leaseDuration by its own clock, not by renewTime", async () => {
  const clock = new FakeClock();
  const leases = new FakeLeases();
  abandoned(leases);
  const b = candidate(leases, clock, "b");
  await clock.advance(14_900);
  assert.equal(b.elector.isLeader, false, "an ancient renewTime alone is no expiry");
  // Tries come every 2 s + jitter (3.2 s here): the first one past 15 s wins.
  await clock.advance(5000);
  assert.equal(b.elector.isLeader, true);
  assert.equal(leases.holder, "b");
  assert.equal(leases.lease?.spec?.leaseTransitions, 4);
  assert.equal(leases.lease?.spec?.leaseDurationSeconds, 15);
  assert.deepEqual(b.log, ["leader ghost", "leader b", "started"]);
  await b.elector.stop();
});

test("a change of the record restarts the wait: a holder that renews late is not robbed", async () => {
  const clock = new FakeClock();
  const leases = new FakeLeases();
  abandoned(leases);
  const b = candidate(leases, clock, "b");
  await clock.advance(10_000);
  abandoned(leases, "2001-01-01T00:00:10.000000Z"); // the holder renewed once more
  await clock.advance(10_000); // b saw the change at its try at 12.8 s
  assert.equal(b.elector.isLeader, false, "15 s have not passed since b saw the change");
  await clock.advance(10_000);
  assert.equal(b.elector.isLeader, true);
  await b.elector.stop();
});

for (const mode of ["down", "hang"] as const) {
  test(`renewals that fail (${mode === "down" ? "refused" : "never answered"}) for renewDeadline end leading, before the Lease expires`, async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const a = candidate(leases, clock, "a");
    await clock.advance(0);
    await clock.advance(2000);
    const lastRenewal = clock.now();
    leases.mode = mode;
    await clock.advance(9000);
    assert.equal(
      a.elector.isLeader,
      true,
      "still within renewDeadline (10 s) of the failing renewal",
    );
    await clock.advance(4000);
    assert.equal(a.elector.isLeader, false);
    assert.deepEqual(a.log, ["leader a", "started", "stopped (signal aborted: true)"]);
    assert.equal(a.ended(), true, "run() resolved: the operator exits");
    assert.ok(clock.now() - lastRenewal < 15_000, "stepped down before anyone may take over");
    await a.run;
  });
}

test("stop() releases the Lease: the other candidate takes it at its next try", async () => {
  const clock = new FakeClock();
  const leases = new FakeLeases();
  const a = candidate(leases, clock, "a");
  await clock.advance(0);
  const b = candidate(leases, clock, "b");
  await clock.advance(5000);
  await a.elector.stop();
  assert.equal(a.elector.isLeader, false);
  assert.deepEqual(a.log, ["leader a", "started", "stopped (signal aborted: true)"]);
  assert.equal(leases.holder, "");
  assert.equal(leases.lease?.spec?.leaseDurationSeconds, 1);
  await clock.advance(3200);
  assert.equal(b.elector.isLeader, true, "no wait for the 15 s lease duration");
  assert.equal(leases.lease?.spec?.leaseTransitions, 1);
  assert.equal(leases.lease?.spec?.leaseDurationSeconds, 15);
  await b.elector.stop();
  await a.run;
  await b.run;
});

test("the leader's work is waited for before onStoppedLeading and the release", async () => {
  const clock = new FakeClock();
  const leases = new FakeLeases();
  const order: string[] = [];
  const a = candidate(leases, clock, "a", async (signal) => {
    await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
    await clock.advance(0); // cleanup takes a few turns
    order.push(`work done; lease held by ${leases.holder}`);
  });
  await clock.advance(0);
  await a.elector.stop();
  order.push(a.log.at(-1) ?? "");
  assert.deepEqual(order, ["work done; lease held by a", "stopped (signal aborted: true)"]);
  assert.equal(leases.holder, "");
});

test("work that fails while leading is only logged: the elector goes on leading until stopped", async () => {
  const clock = new FakeClock();
  const leases = new FakeLeases();
  const a = candidate(leases, clock, "a", () => Promise.reject(new Error("reconciler crashed")));
  await clock.advance(0);
  await clock.advance(10_000);
  assert.equal(a.elector.isLeader, true);
  await a.elector.stop();
  assert.deepEqual(a.log, ["leader a", "started", "stopped (signal aborted: true)"]);
});

test("two candidates starting together: exactly one leads", async () => {
  const clock = new FakeClock();
  const leases = new FakeLeases();
  const a = candidate(leases, clock, "a");
  const b = candidate(leases, clock, "b");
  for (let i = 0; i < 30; i++) {
    await clock.advance(1000);
    assert.equal(Number(a.elector.isLeader) + Number(b.elector.isLeader), 1);
  }
  await a.elector.stop();
  await b.elector.stop();
});

test("stop() before leading ends the tries; timing options are checked", async () => {
  const clock = new FakeClock();
  const leases = new FakeLeases();
  abandoned(leases);
  const b = candidate(leases, clock, "b");
  await clock.advance(5000);
  await b.elector.stop();
  assert.equal(b.ended(), true);
  assert.deepEqual(b.log, ["leader ghost"], "no onStoppedLeading without leading");
  assert.equal(leases.holder, "ghost", "someone else's Lease is not released");
  const opts = { namespace: NS, name: NAME, identity: "x", logger: silent, retryPeriodSec: 2 };
  const cb = { onStartedLeading: () => undefined, onStoppedLeading: () => undefined };
  assert.throws(
    () => new LeaderElector(leases, { ...opts, leaseDurationSec: 10, renewDeadlineSec: 10 }, cb),
    /leaseDurationSec must be greater/,
  );
  assert.throws(
    () => new LeaderElector(leases, { ...opts, leaseDurationSec: 15, renewDeadlineSec: 2 }, cb),
    /renewDeadlineSec must be greater than 1.2/,
  );
});
