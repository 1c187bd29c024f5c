// What one process of simulated agents runs (bench/sim-agents/main.ts), and how the scale
// benchmark starts a few of them, splitting the nodes between them.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type LabProcess, spawnTracked } from "../../src/lab/process.js";

export interface SimAgentsSpec {
  readonly nodes: readonly { readonly name: string; readonly ip: string }[];
  readonly port: number;
  /** kube-eip-certs' folder: nodes/<name>/ holds each agent's certificate. */
  readonly pkiDir: string;
  readonly stateDir: string;
  readonly eipCidr: string;
  readonly internalNet: string;
  readonly gatewayIp: string;
  readonly gatewayDev: string;
  readonly cniDev: string;
}

const MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

/** Starts `processes` processes sharing the nodes; resolves once every agent serves. */
export async function startSimAgents(
  spec: SimAgentsSpec,
  processes: number,
  dir: string,
): Promise<LabProcess<undefined>[]> {
  const procs: LabProcess<undefined>[] = [];
  for (let p = 0; p < processes; p++) {
    const nodes = spec.nodes.filter((_, i) => i % processes === p);
    const file = join(dir, `sim-agents-${p}.json`);
    await writeFile(file, JSON.stringify({ ...spec, nodes }));
    const proc = spawnTracked({
      name: `sim-agents-${p}`,
      ns: undefined,
      argv: [process.execPath, MAIN, file],
      logFile: join(dir, `sim-agents-${p}.log`),
    });
    procs.push(proc);
  }
  await Promise.all(procs.map((p) => p.waitFor(/^READY \d+$/m, 300_000)));
  return procs;
}
