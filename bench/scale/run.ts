// One run of the scale benchmark, pools or addresses named by hand: a fresh control plane
// populated with the nodes and VMIs (untimed), the simulated agents, the operator in its own
// process; then from t0 every EipBinding written (32 in flight) and the time until all are
// Ready, the operator's reconciles, CPU and memory, and what the API and every agent's
// kernel hold at the end (no address twice, none missing).
import { existsSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AgentClient } from "../../src/common/agent-api.js";
import { type CertFiles } from "../../src/deploy/certs.js";
import { EIPBINDINGS } from "../../src/kube/client.js";
import { mapLimit } from "../../src/lab/kube-rest.js";
import { spawnTracked } from "../../src/lab/process.js";
import { mb, now, readStatusKb, round, sleep } from "../common.js";
import { CpuMeter, cpuSeconds, parseScrape, RECONCILE, type Scrape } from "../metrics-scrape.js";
import { startSimAgents } from "../sim-agents/spec.js";
import {
  EIP_CIDR,
  GATEWAY_IP,
  INTERNAL_NET,
  NAMESPACE,
  WRITE_CONCURRENCY,
  eipOf,
  nodeIp,
  nodeName,
  populate,
  startScaleCluster,
  vmiName,
} from "./cluster.js";
import { type ProfileSummary, summarizeProfile } from "./profile.js";
import type { Settings } from "./settings.js";
import { BindingWatch } from "./watch.js";

const OPERATOR_BIN = fileURLToPath(new URL("../../src/bin/eip-operator.js", import.meta.url));

export type Mode = "pools" | "named";

export interface RunFigures {
  readonly mode: Mode;
  readonly writeMs: number;
  readonly lastWriteToReadyMs: number;
  readonly firstReadyMs: number;
  readonly ready: number;
  readonly reconciles: number;
  readonly reconcileResults: string;
  readonly operatorCpuS: number;
  readonly rssStartMB: number;
  readonly rssPeakMB: number;
  readonly rssIdleMB: number;
  readonly heapUsedMB: number;
  readonly externalMB: number;
  /** Pools only: allocations seen per second, first to last. */
  readonly allocationsPerSec: number;
  readonly duplicatesInApi: number;
  readonly agentsHold: number;
  readonly duplicatesInKernels: number;
  readonly watchRestarts: number;
  readonly loadavg: { readonly start: string; readonly end: string };
  /** CPU seconds from t0 to idle of the other processes, and of the whole machine. */
  readonly cpuOthers: string;
  readonly profile: ProfileSummary | undefined;
}

const loadavg = () =>
  os
    .loadavg()
    .map((x) => round(x, 2))
    .join(" ");

async function scrape(port: number): Promise<Scrape> {
  const rsp = await fetch(`http://127.0.0.1:${port}/metrics`);
  return parseScrape(await rsp.text(), RECONCILE);
}

export async function runOnce(
  s: Settings,
  mode: Mode,
  work: string,
  pki: CertFiles,
  port: number,
): Promise<RunFigures> {
  const dir = join(work, mode);
  await mkdir(dir, { recursive: true });
  const stateDir = await mkdtempShm(`keip-scale-${mode}-`);
  const cluster = await startScaleCluster(join(dir, "cp"));
  const cleanups: (() => Promise<unknown>)[] = [() => cluster.stop()];
  try {
    process.stdout.write(`[${mode}] populating ${s.nodes} Nodes and ${s.bindings} VMIs\n`);
    await populate(cluster, { nodes: s.nodes, bindings: s.bindings, pool: mode === "pools" });
    const nodes = Array.from({ length: s.nodes }, (_, k) => ({ name: nodeName(k), ip: nodeIp(k) }));
    const agents = await startSimAgents(
      {
        nodes,
        port,
        pkiDir: join(work, "pki"),
        stateDir,
        eipCidr: EIP_CIDR,
        internalNet: INTERNAL_NET,
        gatewayIp: GATEWAY_IP,
        gatewayDev: "eth1",
        cniDev: "cni0",
      },
      s.agentProcesses,
      dir,
    );
    cleanups.unshift(() => Promise.all(agents.map((a) => a.stop(10_000))));
    const metricsPort = port + 1;
    const profileDir = join(dir, "profile");
    const operator = spawnTracked({
      name: `operator-${mode}`,
      ns: undefined,
      argv: [
        process.execPath,
        ...(s.profile ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : []),
        OPERATOR_BIN,
        "--kubeconfig",
        cluster.cp.kubeconfig,
        "--health-probe-bind-address",
        "0",
        "--metrics-bind-address",
        `127.0.0.1:${metricsPort}`,
        "--agent-port",
        String(port),
        "--agent-tls-ca",
        pki.agentCa.cert,
        "--agent-tls-cert",
        pki.operator.cert,
        "--agent-tls-key",
        pki.operator.key,
        "--pool-reserved",
        GATEWAY_IP,
        "--anti-entropy-interval",
        "30s",
        "--log-level",
        "info",
        ...(s.workers === undefined ? [] : ["--workers", String(s.workers)]),
      ],
      logFile: join(dir, "operator.log"),
    });
    let operatorStopped = false;
    cleanups.unshift(async () => {
      if (!operatorStopped) await operator.stop(60_000);
    });
    await operator.waitFor('"msg":"caches synced; reconciling"', 120_000);
    const watch = new BindingWatch(cluster.client);
    await watch.start();
    cleanups.unshift(() => watch.stop());
    const pid = operator.pid;
    const rssStartMB = mb(readStatusKb(pid, "VmRSS"));
    const scrape0 = await scrape(metricsPort);
    const cpu0 = cpuSeconds(pid);
    const start = loadavg();
    const cp = cluster.cp.pids();
    const meter = new CpuMeter(
      new Map([
        ["apiserver", cp.apiServer ?? NaN],
        ["etcd", cp.etcd ?? NaN],
        ["agents", agents[0]?.pid ?? NaN],
        ["bench", process.pid],
        ...agents.slice(1).map((a, k) => [`agents${k + 1}`, a.pid] as [string, number]),
      ]),
    );

    process.stdout.write(`[${mode}] writing ${s.bindings} EipBindings\n`);
    const t0 = now();
    await mapLimit(
      Array.from({ length: s.bindings }, (_, i) => i),
      WRITE_CONCURRENCY,
      (i) =>
        cluster.client.create(EIPBINDINGS, NAMESPACE, {
          apiVersion: "extension.lucheng0127/v1",
          kind: "EipBinding",
          metadata: { name: vmiName(i), namespace: NAMESPACE },
          spec: { vmiName: vmiName(i), ...(mode === "named" ? { eipAddr: eipOf(i) } : {}) },
        }),
    );
    const written = now();
    const allReady = await watch.waitReady(s.bindings, s.readyTimeoutMs);
    const readyAt = allReady ? Math.max(...watch.firstReady.values()) : NaN;
    process.stdout.write(
      `[${mode}] written in ${round(written - t0)} ms; all Ready ${round(readyAt - written)} ms after the last write\n`,
    );
    // Idle: the queue empty and no reconcile for 2 s.
    let last = await scrape(metricsPort);
    let changed = now();
    const idleEnd = now() + 120_000;
    while (now() < idleEnd) {
      await sleep(250);
      const next = await scrape(metricsPort);
      if (next.histogram.count !== last.histogram.count) changed = now();
      last = next;
      if ((next.values.get("kube_eip_operator_queue_depth") ?? 1) === 0 && now() - changed > 2000)
        break;
    }
    const cpu1 = cpuSeconds(pid);
    const used = meter.used();
    const agentsCpu = Object.entries(used)
      .filter(([k]) => k.startsWith("agents"))
      .reduce((a, [, v]) => a + v, 0);
    const others = `apiserver ${used["apiserver"]}, etcd ${used["etcd"]}, agents ${round(agentsCpu, 1)}, bench ${used["bench"]}, machine ${used["machine"]} of ${round(meter.elapsed() * os.availableParallelism(), 1)}`;
    const rssPeakMB = mb(readStatusKb(pid, "VmHWM"));
    const rssIdleMB = mb(readStatusKb(pid, "VmRSS"));
    const end = loadavg();
    const reconciles = last.histogram.count - scrape0.histogram.count;
    const results = [...last.values]
      .filter(([k]) => k.startsWith("kube_eip_operator_reconcile_total"))
      .map(
        ([k, v]) =>
          `${k.slice("kube_eip_operator_reconcile_total".length)} ${v - (scrape0.values.get(k) ?? 0)}`,
      )
      .join(", ");

    // What the API holds: every address once.
    const items = watch.list();
    const addresses = items.map((b) => b.spec.eipAddr).filter((a): a is string => !!a);
    const duplicatesInApi = addresses.length - new Set(addresses).size;
    const allocs = [...watch.firstAddress.values()];
    const allocationsPerSec =
      mode === "pools" && allocs.length > 1
        ? round(allocs.length / ((Math.max(...allocs) - Math.min(...allocs)) / 1000), 1)
        : NaN;
    // What every agent's kernel holds: asked over mutual TLS, as eipctl does.
    const held: string[] = [];
    await mapLimit(nodes, 16, async (n) => {
      const c = new AgentClient(`${n.ip}:${port}`, {
        tls: { ca: pki.agentCa.cert, cert: pki.admin.cert, key: pki.admin.key },
        serverName: n.name,
      });
      try {
        held.push(...(await c.listBindings(30_000)).bindings.map((b) => b.eipAddr));
      } finally {
        c.close();
      }
    });
    const heap = last.values;
    const figures: Omit<RunFigures, "profile"> = {
      mode,
      writeMs: round(written - t0),
      lastWriteToReadyMs: round(readyAt - written),
      firstReadyMs: round(Math.min(...watch.firstReady.values()) - t0),
      ready: watch.firstReady.size,
      reconciles,
      reconcileResults: results,
      operatorCpuS: round(cpu1 - cpu0, 1),
      rssStartMB,
      rssPeakMB,
      rssIdleMB,
      heapUsedMB: round((heap.get("nodejs_heap_size_used_bytes") ?? NaN) / 2 ** 20),
      externalMB: round((heap.get("nodejs_external_memory_bytes") ?? NaN) / 2 ** 20),
      allocationsPerSec,
      duplicatesInApi,
      agentsHold: held.length,
      duplicatesInKernels: held.length - new Set(held).size,
      watchRestarts: watch.restarts,
      loadavg: { start, end },
      cpuOthers: others,
    };
    await operator.stop(60_000);
    operatorStopped = true;
    let profile: ProfileSummary | undefined;
    if (s.profile) {
      const file = readdirSync(profileDir).find((f) => f.endsWith(".cpuprofile"));
      profile = file ? summarizeProfile(join(profileDir, file)) : undefined;
    }
    return { ...figures, profile };
  } finally {
    for (const c of cleanups) await c().catch(() => {});
    await rm(stateDir, { recursive: true, force: true });
  }
}

/** State on tmpfs: the agents fsync their state files, and there are hundreds of them. */
function mkdtempShm(prefix: string): Promise<string> {
  return mkdtemp(join(existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir(), prefix));
}
