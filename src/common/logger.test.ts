// The records people grep: level names, errors with their stack under `err`, and the fields
// withLogFields adds to whatever is logged while a piece of work runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createLogger, objectFields, withLogFields } from "./logger.js";

function capture(level = "debug") {
  const lines: string[] = [];
  const logger = createLogger("test", level, { write: (line: string) => void lines.push(line) });
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, records };
}

test("records name their level and component, and carry an ISO time", () => {
  const { logger, records } = capture();
  logger.debug("d");
  logger.info("i");
  logger.warn("w");
  logger.error("e");
  assert.deepEqual(
    records().map((r) => [r["level"], r["msg"], r["component"]]),
    [
      ["debug", "d", "test"],
      ["info", "i", "test"],
      ["warn", "w", "test"],
      ["error", "e", "test"],
    ],
  );
  assert.match(String(records()[0]?.["time"]), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

test("an error is logged with its type, message and stack under err", () => {
  const { logger, records } = capture();
  class AgentDown extends Error {
    override name = "AgentDown";
  }
  logger.error({ err: new AgentDown("connection refused") }, "failed");
  logger.warn({ err: "a reason given as text" }, "refused");
  const [failed, refused] = records() as [Record<string, unknown>, Record<string, unknown>];
  const err = failed["err"] as { type: string; message: string; stack: string };
  assert.equal(err.type, "AgentDown");
  assert.equal(err.message, "connection refused");
  assert.match(err.stack, /^AgentDown: connection refused\n\s+at /);
  assert.equal(refused["err"], "a reason given as text");
});

test("withLogFields adds its fields to every record logged during the work, across awaits", async () => {
  const { logger, records } = capture();
  const child = logger.child({ informer: "x" });
  await withLogFields(objectFields("vms/web"), async () => {
    logger.info("before");
    await new Promise((r) => setImmediate(r));
    child.warn("after an await, by a child logger");
    logger.info({ name: "other" }, "the record's own fields win");
    await withLogFields({ node: "n1" }, async () => logger.info("nested"));
  });
  logger.info("outside");
  assert.deepEqual(
    records().map((r) => [r["msg"], r["namespace"], r["name"], r["node"]]),
    [
      ["before", "vms", "web", undefined],
      ["after an await, by a child logger", "vms", "web", undefined],
      ["the record's own fields win", "vms", "other", undefined],
      ["nested", "vms", "web", "n1"],
      ["outside", undefined, undefined, undefined],
    ],
  );
});

test("objectFields splits a cache key; a cluster-scoped key has no namespace", () => {
  assert.deepEqual(objectFields("vms/web"), { namespace: "vms", name: "web" });
  assert.deepEqual(objectFields("node1"), { name: "node1" });
});
