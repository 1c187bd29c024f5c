#!/usr/bin/env node
// eip_agent: wiring only. See src/agent/agent.ts.
import { CommanderError } from "commander";
import { agentCommand, ConfigError, normalizeGoFlags, toAgentConfig } from "../agent/config.js";
import { startAgent } from "../agent/agent.js";
import { createLogger } from "../common/logger.js";
import { ExecRunner } from "../kernel/runner.js";

// Usage errors exit 2 (as eipctl's), after commander has printed what is wrong.
const cmd = agentCommand().exitOverride();
try {
  cmd.parse(normalizeGoFlags(process.argv.slice(2)), { from: "user" });
} catch (err) {
  process.exit(err instanceof CommanderError && err.exitCode === 0 ? 0 : 2);
}
let config;
try {
  config = toAgentConfig(cmd.opts());
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`eip_agent: ${err.message}\nRun "eip_agent --help" for usage.\n`);
  process.exit(2);
}
const logger = createLogger("eip_agent", config.logLevel);
try {
  const agent = await startAgent(config, { runner: new ExecRunner(), logger });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping; kernel state is left in place");
    agent.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
} catch (err) {
  logger.fatal({ err: (err as Error).message }, "agent failed to start");
  process.exit(1);
}
