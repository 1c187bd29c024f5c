// The eip-operator in the lab: its own process in the router namespace (which reaches the
// apiserver and every node's agent), started the way its Deployment starts it.
import { fileURLToPath } from "node:url";
import type { LabCluster } from "./cluster.js";
import type { LabProcess } from "./lab.js";
import { labPki, operatorTlsArgs } from "./lab-tls.js";

export const OPERATOR_BIN = fileURLToPath(new URL("../bin/eip-operator.js", import.meta.url));

export interface LabOperator {
  readonly proc: LabProcess;
  /** 127.0.0.1 inside the router namespace. */
  readonly healthPort: number;
  readonly metricsPort: number;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

let serial = 0;

export async function startOperator(
  cluster: LabCluster,
  opts: {
    extraArgs?: readonly string[];
    name?: string;
    waitFor?: RegExp | string;
    /** Default: the cluster's admin kubeconfig. */
    kubeconfig?: string;
    /** Dial the agents without TLS (--agent-insecure); default mutual TLS. */
    plaintext?: boolean;
  } = {},
): Promise<LabOperator> {
  await labPki(cluster.lab);
  const n = ++serial;
  const healthPort = 18080 + n * 2;
  const metricsPort = healthPort + 1;
  const proc = await cluster.lab.spawnIn(
    cluster.routerNamespace,
    [
      process.execPath,
      OPERATOR_BIN,
      "--kubeconfig",
      opts.kubeconfig ?? cluster.kubeconfig,
      "--health-probe-bind-address",
      `127.0.0.1:${healthPort}`,
      "--metrics-bind-address",
      `127.0.0.1:${metricsPort}`,
      "--anti-entropy-interval",
      "3s",
      "--agent-timeout",
      "3s",
      ...(opts.plaintext ? ["--agent-insecure"] : operatorTlsArgs(cluster.lab)),
      "--log-level",
      "debug",
      ...(opts.extraArgs ?? []),
    ],
    {
      name: opts.name ?? `operator-${n}`,
      waitFor: opts.waitFor ?? '"msg":"caches synced; reconciling"',
      timeoutMs: 30_000,
    },
  );
  return {
    proc,
    healthPort,
    metricsPort,
    async kill() {
      proc.child.kill("SIGKILL");
      await proc.exited;
    },
    async stop() {
      await proc.stop();
    },
  };
}
