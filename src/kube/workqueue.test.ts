import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeClock, settle } from "../common/fake-clock.js";
import { WorkQueue } from "./workqueue.js";

/** Whether get() has answered yet, and with what. */
function pending(q: WorkQueue): { value?: string | undefined; done: boolean } {
  const state: { value?: string | undefined; done: boolean } = { done: false };
  void q.get().then((v) => {
    state.value = v;
    state.done = true;
  });
  return state;
}

test("keys come out first in, first out, each once however often added", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  for (const k of ["a", "b", "a", "c", "b", "a"]) q.add(k);
  assert.equal(q.length, 3);
  assert.deepEqual([await q.get(), await q.get(), await q.get()], ["a", "b", "c"]);
  assert.equal(q.length, 0);
});

test("a key added while processed is not handed out twice at once, and comes back after done()", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  q.add("a");
  q.add("b");
  assert.equal(await q.get(), "a");
  q.add("a"); // changed again while being reconciled
  q.add("a");
  assert.equal(q.length, 1, "only b is ready: a is being processed");
  assert.equal(await q.get(), "b");
  const next = pending(q);
  await settle();
  assert.equal(next.done, false, "a waits for done()");
  q.done("a");
  await settle();
  assert.deepEqual(next, { value: "a", done: true }, "once, although added twice");
  q.done("a");
  q.done("b");
  assert.equal(q.length, 0, "done() without a new add queues nothing");
});

test("a waiting get() is answered by the next add, in the order the getters came", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  const first = pending(q);
  const second = pending(q);
  q.add("x");
  q.add("y");
  await settle();
  assert.deepEqual(first, { value: "x", done: true });
  assert.deepEqual(second, { value: "y", done: true });
});

/** The delays of six addRateLimited calls in a row, to the nearest 50 ms above. */
async function rateLimitedDelays(q: WorkQueue, clock: FakeClock): Promise<number[]> {
  const delays: number[] = [];
  for (let i = 0; i < 6; i++) {
    q.addRateLimited("k");
    const got = pending(q);
    let waited = 0;
    while (!got.done) {
      await clock.advance(50);
      waited += 50;
    }
    assert.equal(got.value, "k");
    q.done("k");
    delays.push(waited);
  }
  return delays;
}

test("addRateLimited: the delay doubles per failure up to the cap; forget() starts over", async () => {
  const clock = new FakeClock();
  // The jitter at the top of its range: each delay is its ceiling.
  const q = new WorkQueue({ clock, baseDelayMs: 100, maxDelayMs: 1000, random: () => 1 });
  assert.deepEqual(await rateLimitedDelays(q, clock), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(q.numRequeues("k"), 6);
  q.forget("k");
  assert.equal(q.numRequeues("k"), 0);
  q.addRateLimited("k");
  await clock.advance(99);
  assert.equal(q.length, 0);
  await clock.advance(1);
  assert.equal(q.length, 1, "back to the base delay");
});

test("addRateLimited: the jitter takes a delay down to half its ceiling, never below", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock, baseDelayMs: 100, maxDelayMs: 1000, random: () => 0 });
  assert.deepEqual(await rateLimitedDelays(q, clock), [50, 100, 200, 400, 500, 500]);
});

test("addAfter holds a key back; asked twice, the earlier time wins; an add meanwhile is not held", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  q.addAfter("a", 500);
  q.addAfter("a", 1000); // later: ignored
  q.addAfter("b", 1000);
  q.addAfter("b", 300); // earlier: replaces
  q.addAfter("now", 0);
  assert.equal(q.length, 1);
  assert.equal(await q.get(), "now");
  await clock.advance(299);
  assert.equal(q.length, 0);
  await clock.advance(1);
  assert.equal(await q.get(), "b");
  await clock.advance(200);
  assert.equal(await q.get(), "a");
  await clock.advance(1000);
  assert.equal(q.length, 0, "each delayed add happened once");
  q.addAfter("c", 100);
  q.add("c");
  assert.equal(await q.get(), "c", "add() does not wait for the pending addAfter");
});

test("shutdown: waiting and later get() answer undefined; queued and delayed keys are dropped", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  const waiting = pending(q);
  q.shutdown();
  await settle();
  assert.deepEqual(waiting, { value: undefined, done: true });

  const q2 = new WorkQueue({ clock });
  q2.add("a");
  q2.addAfter("b", 100);
  q2.shutdown();
  assert.equal(await q2.get(), undefined);
  assert.equal(clock.timers, 0, "the delay's timer is cancelled");
  q2.add("c");
  assert.equal(q2.length, 0, "adds after shutdown are ignored");
  assert.equal(q2.isShutdown, true);
});

test("many keys stay in order across the queue's compaction", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  const keys = Array.from({ length: 5000 }, (_, i) => `k${i}`);
  const out: string[] = [];
  for (const [i, k] of keys.entries()) {
    q.add(k);
    if (i % 2 === 1) {
      const got = (await q.get()) ?? "";
      out.push(got);
      q.done(got);
    }
  }
  while (q.length > 0) out.push((await q.get()) ?? "");
  assert.deepEqual(out, keys);
});
