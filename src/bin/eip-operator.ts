#!/usr/bin/env node
// eip-operator: wiring only. See src/operator/operator.ts.
import { CommanderError } from "commander";
import { ConfigError, operatorCommand, toOperatorConfig } from "../operator/config.js";
import { startOperator } from "../operator/operator.js";
import { createLogger } from "../common/logger.js";
import { withVersion } from "../common/version.js";

// Usage errors exit 2, after commander has printed what is wrong.
const cmd = withVersion(operatorCommand()).exitOverride();
try {
  cmd.parse(process.argv.slice(2), { from: "user" });
} catch (err) {
  process.exit(err instanceof CommanderError && err.exitCode === 0 ? 0 : 2);
}
let config;
try {
  config = toOperatorConfig(cmd.opts());
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`eip-operator: ${err.message}\nRun "eip-operator --help" for usage.\n`);
  process.exit(2);
}
const logger = createLogger("eip-operator", config.logLevel);
try {
  const operator = await startOperator(config, logger);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping");
    operator.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  const { lostLease } = await operator.done;
  if (lostLease) {
    await operator.stop().catch(() => {});
    process.exit(1);
  }
} catch (err) {
  logger.fatal({ err }, "operator failed to start");
  process.exit(1);
}
