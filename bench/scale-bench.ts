// The cluster-scale benchmark: the eip-operator against a real kube-apiserver with N
// EipBindings on M simulated nodes, each node a real agent gRPC server with mutual TLS, as in
// production, whose kernel is a recording model (bench/sim-agents/), many agents per
// process. Two runs of the same size, each on a fresh control plane: "pools" (a default
// EipPool allocates every address) and the baseline "named" (every binding names its
// address by hand, no EipPool). It prints figures side by side and asserts nothing.
//
//   node dist/bench/scale-bench.js [--bindings 10000] [--nodes 200] [--agent-processes 4]
//                                  [--workers W] [--profile] [--only pools|named] [--json F]
//
// Per run (bench/scale/run.ts): the Nodes (InternalIP 127.0.1.x, Ready) and one Running VMI
// per binding are written first, untimed; the agents start and the operator (its defaults
// but --anti-entropy-interval 30s and --pool-reserved for the agents' gateway) syncs; then
// from t0 all N EipBindings are created, 32 requests in flight. Figures: the apiserver's
// own write time (t0 to the last create's answer), the time from that last write until
// every binding was seen Ready (an informer in this process stamps each first Ready=True),
// reconciles per binding (the operator's reconcile histogram count, once it is idle: queue
// empty and no reconcile for 2 s), the operator's CPU seconds from t0 to idle per 1,000
// bindings (utime + stime of its process), its RSS (VmHWM: peak), allocations per second
// (first to last spec.eipAddr seen), and at the end every address once in the API and in
// the agents' kernels together (each agent's ListBindings over TLS). With --profile the
// operator runs under `node --cpu-prof`; its profile is summed by self time.
import { mkdtemp } from "node:fs/promises";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import { join } from "node:path";
import { makeCerts } from "../src/deploy/certs.js";
import { ExecRunner } from "../src/kernel/runner.js";
import { machine, round } from "./common.js";
import { nodeIp, nodeName } from "./scale/cluster.js";
import { type RunFigures, runOnce } from "./scale/run.js";
import { parseSettings } from "./scale/settings.js";

/** A free TCP port on the first simulated node's address and the next one (metrics). */
async function freePortPair(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const free = await Promise.all(
      [port, port + 1].map(
        (p) =>
          new Promise<boolean>((resolve) => {
            const srv = createServer();
            srv.once("error", () => resolve(false));
            srv.listen(p, "127.0.0.1", () => srv.close(() => resolve(true)));
          }),
      ),
    );
    if (free.every(Boolean)) return port;
  }
}

function table(runs: readonly RunFigures[], n: number): string {
  const named = runs.find((r) => r.mode === "named");
  const pools = runs.find((r) => r.mode === "pools");
  const per1000 = (r: RunFigures | undefined) =>
    r ? `${round(r.operatorCpuS / (n / 1000), 2)} s` : "not run";
  const cell = (r: RunFigures | undefined, f: (r: RunFigures) => string) => (r ? f(r) : "not run");
  const sec = (ms: number) => `${round(ms / 1000, 1)} s`;
  const yes = (ok: boolean | undefined) => (ok === undefined ? "" : ok ? "yes" : "MISSED");
  const rows: [string, string, string, string, string][] = [
    ["metric", "pools", "baseline (named, no pools)", "target", "met"],
    [
      "EipBindings written (apiserver)",
      cell(pools, (r) => sec(r.writeMs)),
      cell(named, (r) => sec(r.writeMs)),
      "",
      "",
    ],
    [
      "last write -> all Ready",
      cell(pools, (r) => sec(r.lastWriteToReadyMs)),
      cell(named, (r) => sec(r.lastWriteToReadyMs)),
      "<= 10 s",
      yes(pools && pools.lastWriteToReadyMs <= 10_000),
    ],
    [
      "Ready (of N)",
      cell(pools, (r) => `${r.ready}/${n}`),
      cell(named, (r) => `${r.ready}/${n}`),
      "",
      "",
    ],
    [
      "reconciles per binding",
      cell(pools, (r) => `${round(r.reconciles / n, 2)}`),
      cell(named, (r) => `${round(r.reconciles / n, 2)}`),
      "<= 2",
      yes(pools && pools.reconciles / n <= 2),
    ],
    [
      "operator RSS peak (start)",
      cell(pools, (r) => `${r.rssPeakMB} MB (${r.rssStartMB})`),
      cell(named, (r) => `${r.rssPeakMB} MB (${r.rssStartMB})`),
      "<= 300 MB",
      yes(pools && pools.rssPeakMB <= 300),
    ],
    [
      "operator RSS / V8 heap used / external, idle",
      cell(pools, (r) => `${r.rssIdleMB} / ${r.heapUsedMB} / ${r.externalMB} MB`),
      cell(named, (r) => `${r.rssIdleMB} / ${r.heapUsedMB} / ${r.externalMB} MB`),
      "",
      "",
    ],
    ["operator CPU per 1,000 bindings", per1000(pools), per1000(named), "", ""],
    ["allocations per second", cell(pools, (r) => `${r.allocationsPerSec}/s`), "-", "", ""],
    [
      "addresses twice: API / kernels",
      cell(pools, (r) => `${r.duplicatesInApi} / ${r.duplicatesInKernels}`),
      cell(named, (r) => `${r.duplicatesInApi} / ${r.duplicatesInKernels}`),
      "0 / 0",
      yes(pools && pools.duplicatesInApi === 0 && pools.duplicatesInKernels === 0),
    ],
    [
      "agents hold (all nodes)",
      cell(pools, (r) => String(r.agentsHold)),
      cell(named, (r) => String(r.agentsHold)),
      String(n),
      "",
    ],
    [
      "CPU s t0 -> idle: others",
      cell(pools, (r) => r.cpuOthers),
      cell(named, (r) => r.cpuOthers),
      "",
      "",
    ],
    [
      "reconcile results",
      cell(pools, (r) => r.reconcileResults),
      cell(named, (r) => r.reconcileResults),
      "",
      "",
    ],
    [
      "loadavg start / end",
      cell(pools, (r) => `${r.loadavg.start} / ${r.loadavg.end}`),
      cell(named, (r) => `${r.loadavg.start} / ${r.loadavg.end}`),
      "",
      "",
    ],
  ];
  const widths = [0, 1, 2, 3, 4].map((c) => Math.max(...rows.map((r) => r[c]?.length ?? 0)));
  const line = (r: readonly string[]) =>
    r
      .map((cell, c) => cell.padEnd(widths[c] ?? 0))
      .join("  ")
      .trimEnd();
  return [
    line(rows[0] ?? []),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...rows.slice(1).map(line),
  ].join("\n");
}

function profileText(r: RunFigures): string {
  if (!r.profile) return "";
  const p = r.profile;
  return (
    `\nCPU profile of the operator (${r.mode}), self time, ${p.totalMs} ms sampled:\n` +
    p.byFile.map(([f, ms]) => `  ${String(ms).padStart(9)} ms  ${f}`).join("\n") +
    "\n  by function:\n" +
    p.byFunction.map(([f, ms]) => `  ${String(ms).padStart(9)} ms  ${f}`).join("\n") +
    "\n"
  );
}

async function main(): Promise<number> {
  const s = parseSettings(process.argv.slice(2));
  const m = machine();
  process.stdout.write(
    `kube-eip scale benchmark: ${s.bindings} EipBindings on ${s.nodes} simulated nodes (${s.agentProcesses} agent processes), operator workers ${s.workers ?? "default"}\n` +
      Object.entries(m)
        .map(([k, v]) => `  ${k.padEnd(9)} ${v}`)
        .join("\n") +
      "\n",
  );
  const work = await mkdtemp(join(os.tmpdir(), "keip-scale-"));
  const nodes = Array.from({ length: s.nodes }, (_, k) => ({ name: nodeName(k), ip: nodeIp(k) }));
  const pki = await makeCerts(new ExecRunner({ timeoutMs: 30_000 }), {
    dir: join(work, "pki"),
    nodes,
    days: 30,
  });
  const runs: RunFigures[] = [];
  for (const mode of s.modes) {
    runs.push(await runOnce(s, mode, work, pki, await freePortPair()));
    process.stdout.write(`${JSON.stringify(runs.at(-1))}\n`);
  }
  process.stdout.write(`\n${table(runs, s.bindings)}\n${runs.map(profileText).join("")}`);
  process.stdout.write(`(logs and profiles in ${work})\n`);
  if (s.jsonFile)
    writeFileSync(s.jsonFile, JSON.stringify({ machine: m, settings: s, runs }, null, 2));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`scale-bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
