// The agent's process: parse the flags (usage errors exit 2, as eipctl's), start, and stop
// on SIGTERM or SIGINT leaving the kernel state in place. Shared by eip_agent and the
// container's entrypoint, which only differ in where the flags come from.
import { CommanderError } from "commander";
import { startAgent } from "./agent.js";
import { agentCommand, ConfigError, normalizeGoFlags, toAgentConfig } from "./config.js";
import type { EnvArg } from "./env.js";
import { createLogger } from "../common/logger.js";
import { ExecRunner } from "../kernel/runner.js";
import { withVersion } from "../common/version.js";

export interface AgentMainOptions {
  /** Flags that came from the environment: logged at start, named in usage errors. */
  readonly fromEnv?: readonly EnvArg[];
}

function describeEnv(fromEnv: readonly EnvArg[]): string {
  return fromEnv.map((e) => `  ${e.env}=${e.shown} -> ${e.flag}`).join("\n");
}

export async function agentMain(argv: readonly string[], options: AgentMainOptions = {}) {
  const fromEnv = options.fromEnv ?? [];
  const usageHint =
    fromEnv.length > 0 ? `Flags from the environment:\n${describeEnv(fromEnv)}\n` : "";
  const cmd = withVersion(agentCommand()).exitOverride();
  try {
    cmd.parse(normalizeGoFlags(argv), { from: "user" });
  } catch (err) {
    const ok = err instanceof CommanderError && err.exitCode === 0;
    if (!ok) process.stderr.write(usageHint);
    process.exit(ok ? 0 : 2);
  }
  let config;
  try {
    config = toAgentConfig(cmd.opts());
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(
      `eip_agent: ${err.message}\n${usageHint}Run "eip_agent --help" for usage.\n`,
    );
    process.exit(2);
  }
  const logger = createLogger("eip_agent", config.logLevel);
  if (fromEnv.length > 0) {
    logger.info(
      { env: Object.fromEntries(fromEnv.map((e) => [e.env, e.shown])) },
      "settings from the environment",
    );
  }
  try {
    const runner = new ExecRunner({ timeoutMs: config.commandTimeoutSec * 1000 });
    const agent = await startAgent(config, { runner, logger });
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
    logger.fatal({ err }, "agent failed to start");
    process.exit(1);
  }
}
