import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { mapLimit } from "./kube-rest.js";

test("mapLimit keeps the order and never runs more than the limit at once", async () => {
  let running = 0;
  let most = 0;
  const results = await mapLimit([5, 1, 4, 2, 3, 0, 2], 3, async (ms, i) => {
    running++;
    most = Math.max(most, running);
    await sleep(ms);
    running--;
    return `${i}:${ms}`;
  });
  assert.deepEqual(results, ["0:5", "1:1", "2:4", "3:2", "4:3", "5:0", "6:2"]);
  assert.equal(most, 3);
  assert.deepEqual(await mapLimit([], 4, () => Promise.resolve(1)), []);
});

test("mapLimit starts nothing new after a failure and rejects once the running ones settled", async () => {
  const started: number[] = [];
  let settled = 0;
  await assert.rejects(
    mapLimit([0, 1, 2, 3, 4, 5], 2, async (n) => {
      started.push(n);
      await sleep(n === 1 ? 1 : 10);
      settled++;
      if (n === 1) throw new Error("one failed");
      return n;
    }),
    /one failed/,
  );
  assert.deepEqual(started, [0, 1]);
  assert.equal(settled, 2, "the other running one finished before the rejection");
});
