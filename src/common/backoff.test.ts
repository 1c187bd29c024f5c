import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay } from "./backoff.js";

test("the ceiling doubles per attempt up to the cap; the jitter is its upper half", () => {
  const delays = (random: () => number) =>
    [0, 1, 2, 3, 4, 40].map((attempt) =>
      backoffDelay(attempt, { baseMs: 100, maxMs: 1000, random }),
    );
  assert.deepEqual(
    delays(() => 1),
    [100, 200, 400, 800, 1000, 1000],
  );
  assert.deepEqual(
    delays(() => 0),
    [50, 100, 200, 400, 500, 500],
  );
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(2, { baseMs: 100, maxMs: 1000 });
    assert.ok(d >= 200 && d <= 400, String(d));
  }
});
