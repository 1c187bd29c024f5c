// One dataplane's run of the agent benchmark: a lab of its own, kube-eip at each level of
// held bindings, then the baseline.
import { Lab } from "../../src/lab/lab.js";
import { now, round } from "../common.js";
import { type AgentLevel, AgentUnderTest, agentLevel } from "./agent.js";
import { type BaselineLevel, baselineLevels } from "./baseline.js";
import type { Settings } from "./settings.js";
import { type Variant, variantName } from "./settings.js";

export interface BackendResult {
  readonly variant: Variant;
  readonly labPrefix: string;
  readonly agent: readonly AgentLevel[];
  readonly baseline: readonly BaselineLevel[];
  /** The variant whose baseline this one shows, when it did not run its own. */
  readonly baselineOf?: string;
  readonly wallSec: number;
  readonly error?: string;
}

export async function benchBackend(
  variant: Variant,
  s: Settings,
  prefix: string,
  runBaseline: boolean,
): Promise<BackendResult> {
  const start = now();
  const log = (line: string) =>
    process.stdout.write(`[${name} ${round((now() - start) / 1000)}s] ${line}\n`);
  const { mode } = variant;
  const name = variantName(variant);
  const lab = await Lab.up({ nodes: 2, iptablesModes: mode, removeOnExit: true, prefix });
  log(`lab ${lab.prefix} up (nodes 1 and 2, iptables-${mode})`);
  const agentLevels: AgentLevel[] = [];
  const baseline: BaselineLevel[] = [];
  let error: string | undefined;
  const agent = new AgentUnderTest(lab, variant, s);
  try {
    for (const n of s.agentHeld) {
      log(`kube-eip with ${n} held bindings`);
      agentLevels.push(await agentLevel(lab, agent, variant, n, s, log));
    }
    await agent.kill();
    if (runBaseline) {
      log("baseline (the seed's command sequence)");
      baseline.push(...(await baselineLevels(lab, mode, s, log)));
    }
  } catch (err) {
    error = err instanceof Error ? (err.stack ?? err.message) : String(err);
    log(`FAILED: ${error}`);
  } finally {
    await agent.kill().catch(() => {});
    await lab.down();
  }
  return {
    variant,
    labPrefix: lab.prefix,
    agent: agentLevels,
    baseline,
    wallSec: round((now() - start) / 1000),
    error,
  };
}
