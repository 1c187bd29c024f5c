import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, parseOperatorArgs } from "./config.js";

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
