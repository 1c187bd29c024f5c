// A real Kubernetes control plane for the tests and the lab: etcd and kube-apiserver, built
// by scripts/kube-build.sh, started in the host's namespace on 127.0.0.1 (or inside a given
// network namespace), each with its log file in the run dir.
//
// What it owns: the two processes it spawns (tracked and stopped by their PIDs, SIGTERM and
// then SIGKILL; killed at once if this process exits first) and the run dir, which it removes
// on stop() when it made the dir itself. Order: keys and certificates, the admin kubeconfig,
// etcd, then the apiserver; stop() goes the other way. The apiserver can be restarted while
// etcd keeps the data. It never touches a network namespace's configuration: in a given
// namespace, loopback must be up, and `address` (if not 127.0.0.1) on one of its devices.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ExecRunner, type CommandRunner } from "../kernel/runner.js";
import { spawnTracked, type LabProcess } from "../lab/process.js";
import { findKubeBinaries, type KubeBinaries } from "./binaries.js";
import { Kubectl } from "./kubectl.js";
import { ensurePki, type Pki } from "./pki.js";

export interface ControlPlanePorts {
  readonly apiServer: number;
  readonly etcdClient: number;
  readonly etcdPeer: number;
}

/** The ports in a network namespace of the control plane's own. */
export const NETNS_PORTS: ControlPlanePorts = { apiServer: 6443, etcdClient: 2379, etcdPeer: 2380 };

/** Service network; its first address is the `kubernetes` Service's, named in the certificate. */
export const SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16";
const KUBERNETES_SERVICE_IP = "10.96.0.1";
const SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local";

export interface ControlPlaneOptions {
  /** Run dir (keys, etcd data, kubeconfigs, logs); kept by stop(). Default: a new temporary dir, removed by stop(). */
  readonly dir?: string;
  /** Run etcd, the apiserver and kubectl in this network namespace (`ip netns exec`). */
  readonly netns?: string;
  /** IPv4 address the apiserver listens on and is reached at; default 127.0.0.1. etcd is on 127.0.0.1. */
  readonly address?: string;
  /** Default: free ports on loopback in the host's namespace, NETNS_PORTS in a namespace. */
  readonly ports?: ControlPlanePorts;
  /** Default: those scripts/kube-build.sh built for hack/kube/go.mod. */
  readonly binaries?: KubeBinaries;
  readonly runner?: CommandRunner;
  /** How long etcd, and then the apiserver, may take to become ready (each). */
  readonly readyTimeoutMs?: number;
}

export interface ControlPlane {
  readonly dir: string;
  /** Admin kubeconfig (client certificate in group system:masters). */
  readonly kubeconfig: string;
  /** https://address:port */
  readonly server: string;
  /** The CA that signed the serving and client certificates. */
  readonly caCert: string;
  readonly binaries: KubeBinaries;
  /** kubectl with the admin kubeconfig. */
  readonly kubectl: Kubectl;
  /** PIDs of the running etcd and apiserver (undefined once stopped). */
  pids(): { readonly etcd?: number; readonly apiServer?: number };
  /** Server-side apply of manifest files or folders, as admin. */
  applyManifests(files: readonly string[]): Promise<void>;
  waitForCrdEstablished(name: string, timeoutMs?: number): Promise<void>;
  /** Writes a kubeconfig `<name>.kubeconfig` in the run dir that authenticates with the bearer token. */
  writeTokenKubeconfig(name: string, token: string): Promise<string>;
  /** Stops the apiserver and starts it again on the same port and etcd; resolves when ready. */
  restartApiServer(): Promise<void>;
  /** Stops both processes (and removes a temporary run dir). Idempotent. */
  stop(): Promise<void>;
}

/** How long the apiserver may take to finish its requests after SIGTERM. */
const API_SERVER_GRACE_MS = 10_000;
const ETCD_GRACE_MS = 5_000;

/** Distinct free TCP ports on the address, in this process's namespace. */
async function freePorts(address: string, count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, address, () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const a = s.address();
    if (a === null || typeof a === "string") throw new Error("no port");
    return a.port;
  });
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

interface ClusterEntry {
  readonly name: string;
  readonly user: Record<string, string>;
}

/** A kubeconfig (JSON, which is YAML) with one cluster, one user and one context. */
function renderKubeconfig(server: string, caCert: string, entry: ClusterEntry): string {
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "kube-eip-lab", cluster: { server, "certificate-authority": caCert } }],
    users: [{ name: entry.name, user: entry.user }],
    contexts: [{ name: entry.name, context: { cluster: "kube-eip-lab", user: entry.name } }],
    "current-context": entry.name,
  };
  return JSON.stringify(config, null, 2) + "\n";
}

function etcdArgs(dataDir: string, ports: ControlPlanePorts): string[] {
  const client = `http://127.0.0.1:${ports.etcdClient}`;
  const peer = `http://127.0.0.1:${ports.etcdPeer}`;
  return [
    "--name=kube-eip-lab",
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=kube-eip-lab=${peer}`,
    "--logger=zap",
    "--log-outputs=stderr",
  ];
}

function apiServerArgs(pki: Pki, address: string, ports: ControlPlanePorts): string[] {
  return [
    `--etcd-servers=http://127.0.0.1:${ports.etcdClient}`,
    `--bind-address=${address}`,
    `--advertise-address=${address}`,
    `--secure-port=${ports.apiServer}`,
    `--tls-cert-file=${pki.serverCert}`,
    `--tls-private-key-file=${pki.serverKey}`,
    `--client-ca-file=${pki.caCert}`,
    "--authorization-mode=Node,RBAC",
    `--service-account-issuer=${SERVICE_ACCOUNT_ISSUER}`,
    `--service-account-key-file=${pki.serviceAccountPublicKey}`,
    `--service-account-signing-key-file=${pki.serviceAccountKey}`,
    `--service-cluster-ip-range=${SERVICE_CLUSTER_IP_RANGE}`,
    // No kubelets and no peers: the `kubernetes` Service's endpoints would name an address
    // only this namespace reaches.
    "--endpoint-reconciler-type=none",
    "--profiling=false",
  ];
}

class RunningControlPlane implements ControlPlane {
  readonly kubeconfig: string;
  readonly server: string;
  readonly caCert: string;
  readonly kubectl: Kubectl;
  private etcd: (LabProcess<string | undefined> & { killNow(): void }) | undefined;
  private apiServer: (LabProcess<string | undefined> & { killNow(): void }) | undefined;
  private stopping: Promise<void> | undefined;
  private readonly onExit = () => {
    this.apiServer?.killNow();
    this.etcd?.killNow();
  };

  constructor(
    readonly dir: string,
    private readonly ownsDir: boolean,
    readonly binaries: KubeBinaries,
    private readonly pki: Pki,
    private readonly options: {
      readonly netns: string | undefined;
      readonly address: string;
      readonly ports: ControlPlanePorts;
      readonly runner: CommandRunner;
      readonly readyTimeoutMs: number;
    },
  ) {
    this.kubeconfig = join(dir, "admin.kubeconfig");
    this.server = `https://${options.address}:${options.ports.apiServer}`;
    this.caCert = pki.caCert;
    this.kubectl = new Kubectl(options.runner, {
      binary: binaries.kubectl,
      kubeconfig: this.kubeconfig,
      netns: options.netns,
    });
    process.on("exit", this.onExit);
  }

  pids() {
    return {
      etcd: this.etcd?.running() ? this.etcd.pid : undefined,
      apiServer: this.apiServer?.running() ? this.apiServer.pid : undefined,
    };
  }

  private spawn(name: string, argv: readonly string[]) {
    return spawnTracked<string | undefined>({
      name,
      ns: this.options.netns,
      argv,
      logFile: join(this.dir, "logs", `${name}.log`),
    });
  }

  async start(): Promise<void> {
    await mkdir(join(this.dir, "logs"), { recursive: true });
    await writeFile(
      this.kubeconfig,
      renderKubeconfig(this.server, this.caCert, {
        name: "admin",
        user: { "client-certificate": this.pki.adminCert, "client-key": this.pki.adminKey },
      }),
      { mode: 0o600 },
    );
    this.etcd = this.spawn("etcd", [
      this.binaries.etcd,
      ...etcdArgs(join(this.dir, "etcd"), this.options.ports),
    ]);
    // Logged once etcd is ready (it has a leader) and accepts clients.
    await this.etcd.waitFor("serving client traffic", this.options.readyTimeoutMs);
    await this.startApiServer();
  }

  private async startApiServer(): Promise<void> {
    const proc = this.spawn("kube-apiserver", [
      this.binaries.kubeApiserver,
      ...apiServerArgs(this.pki, this.options.address, this.options.ports),
    ]);
    this.apiServer = proc;
    const deadline = Date.now() + this.options.readyTimeoutMs;
    let last = "";
    for (;;) {
      if (!proc.running()) {
        const exit = await proc.exited;
        throw new Error(
          `kube-apiserver exited (code ${exit.code}, signal ${exit.signal}) before it was ready; log ${proc.logFile}:\n${proc.output().slice(-3000)}`,
        );
      }
      try {
        if ((await this.kubectl.run(["get", "--raw=/readyz"])).trim() === "ok") return;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      if (Date.now() > deadline) {
        throw new Error(
          `kube-apiserver not ready within ${this.options.readyTimeoutMs} ms (last: ${last}); log ${proc.logFile}:\n${proc.output().slice(-3000)}`,
        );
      }
      await sleep(250);
    }
  }

  applyManifests(files: readonly string[]): Promise<void> {
    return this.kubectl.applyManifests(files);
  }

  waitForCrdEstablished(name: string, timeoutMs?: number): Promise<void> {
    return this.kubectl.waitForCrdEstablished(name, timeoutMs);
  }

  async writeTokenKubeconfig(name: string, token: string): Promise<string> {
    if (!/^[A-Za-z0-9._-]+$/.test(name))
      throw new Error(`bad kubeconfig name ${JSON.stringify(name)}`);
    const path = join(this.dir, `${name}.kubeconfig`);
    await writeFile(path, renderKubeconfig(this.server, this.caCert, { name, user: { token } }), {
      mode: 0o600,
    });
    return path;
  }

  async restartApiServer(): Promise<void> {
    if (this.stopping) throw new Error("restartApiServer: the control plane is stopped");
    await this.apiServer?.stop(API_SERVER_GRACE_MS);
    await this.startApiServer();
  }

  stop(): Promise<void> {
    return this.shutdown({ removeDir: this.ownsDir });
  }

  shutdown(options: { removeDir: boolean }): Promise<void> {
    this.stopping ??= (async () => {
      await this.apiServer?.stop(API_SERVER_GRACE_MS);
      await this.etcd?.stop(ETCD_GRACE_MS);
      process.off("exit", this.onExit);
      if (options.removeDir) await rm(this.dir, { recursive: true, force: true });
    })();
    return this.stopping;
  }
}

/** Starts etcd and kube-apiserver; resolves once /readyz answers ok. Stops both on failure. */
export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const runner = options.runner ?? new ExecRunner();
  const address = options.address ?? "127.0.0.1";
  const binaries = options.binaries ?? (await findKubeBinaries());
  const ports =
    options.ports ?? (options.netns === undefined ? await hostPorts(address) : NETNS_PORTS);
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), "kube-eip-cp-")));
  const pki = await ensurePki(runner, join(dir, "pki"), [
    address,
    "127.0.0.1",
    "localhost",
    KUBERNETES_SERVICE_IP,
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
  ]);
  const cp = new RunningControlPlane(dir, options.dir === undefined, binaries, pki, {
    netns: options.netns,
    address,
    ports,
    runner,
    readyTimeoutMs: options.readyTimeoutMs ?? 60_000,
  });
  try {
    await cp.start();
  } catch (err) {
    // Keep the logs of a failed start: the error names them.
    await cp.shutdown({ removeDir: false });
    throw err;
  }
  return cp;
}

async function hostPorts(address: string): Promise<ControlPlanePorts> {
  const [apiServer = 0] = await freePorts(address, 1);
  const [etcdClient = 0, etcdPeer = 0] = await freePorts("127.0.0.1", 2);
  return { apiServer, etcdClient, etcdPeer };
}
