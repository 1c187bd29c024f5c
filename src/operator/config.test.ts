// eip-operator's flags: --node-not-ready-grace (a duration, 5 minutes by default), and TLS
// to the agents unless --agent-insecure says otherwise.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, parseOperatorArgs } from "./config.js";

const args = (...a: string[]) => parseOperatorArgs(["--agent-insecure", ...a]);

test("--node-not-ready-grace: 5m by default, a duration, refused when not one", () => {
  assert.equal(args().nodeNotReadyGraceMs, 300_000);
  assert.equal(args("--node-not-ready-grace", "30s").nodeNotReadyGraceMs, 30_000);
  assert.equal(args("--node-not-ready-grace", "2m").nodeNotReadyGraceMs, 120_000);
  for (const bad of ["0s", "soon", "-1m"]) {
    assert.throws(() => args("--node-not-ready-grace", bad), ConfigError, bad);
  }
});

test("the operator dials agents in plaintext only when told to", () => {
  assert.throws(
    () => parseOperatorArgs([]),
    (e: Error) =>
      e instanceof ConfigError &&
      /refusing to dial the agents without TLS: .* or --agent-insecure/.test(e.message),
  );
  assert.throws(
    () => parseOperatorArgs(["--agent-insecure", "--agent-tls-ca", "ca.crt"]),
    /--agent-insecure contradicts --agent-tls-ca/,
  );
  assert.equal(parseOperatorArgs(["--agent-insecure"]).agentTls, undefined);
  assert.deepEqual(
    parseOperatorArgs(["--agent-tls-ca", "ca", "--agent-tls-cert", "c", "--agent-tls-key", "k"])
      .agentTls,
    { ca: "ca", cert: "c", key: "k" },
  );
});
