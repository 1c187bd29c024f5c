// eip-operator's flags: --node-not-ready-grace (a duration, 5 minutes by default).
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, parseOperatorArgs } from "./config.js";

test("--node-not-ready-grace: 5m by default, a duration, refused when not one", () => {
  assert.equal(parseOperatorArgs([]).nodeNotReadyGraceMs, 300_000);
  assert.equal(parseOperatorArgs(["--node-not-ready-grace", "30s"]).nodeNotReadyGraceMs, 30_000);
  assert.equal(parseOperatorArgs(["--node-not-ready-grace", "2m"]).nodeNotReadyGraceMs, 120_000);
  for (const bad of ["0s", "soon", "-1m"]) {
    assert.throws(() => parseOperatorArgs(["--node-not-ready-grace", bad]), ConfigError, bad);
  }
});
