#!/usr/bin/env node
// eip_agent: wiring only. See src/agent/agent.ts.
import { agentMain } from "../agent/main.js";

await agentMain(process.argv.slice(2));
