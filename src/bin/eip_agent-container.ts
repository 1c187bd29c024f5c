#!/usr/bin/env node
// The agent container's entrypoint (also installed as the seed's /entrypoint.sh): the
// settings of the ConfigMap eip-agent-cm arrive as AGENT_* variables (src/agent/env.ts) and
// become flags, followed by the container's own arguments; then it is eip_agent.
import { agentMain } from "../agent/main.js";
import { agentArgsFromEnv, EnvError } from "../agent/env.js";

let fromEnv;
try {
  fromEnv = agentArgsFromEnv(process.env);
} catch (err) {
  if (!(err instanceof EnvError)) throw err;
  process.stderr.write(`eip_agent: ${err.message}\n`);
  process.exit(2);
}
await agentMain([...fromEnv.argv, ...process.argv.slice(2)], { fromEnv: fromEnv.used });
