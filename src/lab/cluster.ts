// The lab as a Kubernetes cluster: a real etcd and kube-apiserver (src/kube-lab) inside the
// router namespace, listening on the router's management address, which every node (and an
// operator started in the router namespace) reaches; our EipBinding CRD and KubeVirt's VMI
// CRD; one Node object per lab node, named and addressed as the lab names it. The tests and
// the demo play kubelet and virt-handler: they write Node and VMI status as a cluster would.
//
// A VMI here is both a lab VMI (a namespace plugged into its node's cni0) and a
// kubevirt.io/v1 VirtualMachineInstance whose status says where it runs (phase, nodeName,
// interfaces[0].ipAddress); moving it re-plugs it and writes the status a completed live
// migration writes. For benchmarks, VMI objects can be created without a lab VMI behind
// them (`plug: false`), thousands at a time, over the REST API directly, with addresses
// from the pod network's spare /24s when a node's own /24 is too small (`addressPool`).
//
// The control plane stops with the lab: startLabCluster registers a lab.onDown hook.
import { randomUUID } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { release } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { formatIpv4, isIpv4, parseIpv4 } from "../common/ipv4.js";
import { startControlPlane, type ControlPlane } from "../kube-lab/control-plane.js";
import { pkiPaths } from "../kube-lab/pki.js";
import { KubeApiError, KubeRest, mapLimit } from "./kube-rest.js";
import type { Lab, LabProcess } from "./lab.js";
import { checkVmiName } from "./topology.js";

/** The agent's gRPC port on every node (COMPATIBILITY.md). */
export const AGENT_PORT = 6127;

const REPO = new URL("../../../", import.meta.url);
export const EIPBINDING_CRD = fileURLToPath(
  new URL("config/crd/bases/extension.lucheng0127_eipbindings.yaml", REPO),
);
export const EIPPOOL_CRD = fileURLToPath(
  new URL("config/crd/bases/extension.lucheng0127_eippools.yaml", REPO),
);
export const VMI_CRD = fileURLToPath(new URL("e2e/fixtures/kubevirt-vmi-crd.yaml", REPO));
export const EIPBINDING_CRD_NAME = "eipbindings.extension.lucheng0127";
export const EIPPOOL_CRD_NAME = "eippools.extension.lucheng0127";
export const VMI_CRD_NAME = "virtualmachineinstances.kubevirt.io";
/** The relay from a Unix socket to the apiserver (compiled next to this file). */
export const RELAY_SCRIPT = fileURLToPath(new URL("./unix-relay.js", import.meta.url));
/** What the cluster's description file is called in its run dir. */
export const CLUSTER_FILE = "cluster.json";

/** The label virt-controller keeps on a VMI: the node it runs on. */
export const NODE_NAME_LABEL = "kubevirt.io/nodeName";

export type VmiPhase =
  "Pending" | "Scheduling" | "Scheduled" | "Running" | "Succeeded" | "Failed" | "Unknown";

const PHASES: readonly VmiPhase[] = [
  "Pending",
  "Scheduling",
  "Scheduled",
  "Running",
  "Succeeded",
  "Failed",
  "Unknown",
];
/** Phases in which the VMI has a node (status.nodeName). */
const PLACED: ReadonlySet<VmiPhase> = new Set([
  "Scheduled",
  "Running",
  "Succeeded",
  "Failed",
  "Unknown",
]);
/** Phases in which virt-handler has reported the interfaces. */
const REPORTED: ReadonlySet<VmiPhase> = new Set(["Running", "Succeeded", "Failed", "Unknown"]);

export interface LabClusterOptions {
  /** Run dir of the control plane; default `<lab.runDir>/cluster` (removed with the lab). */
  readonly dir?: string;
  /** Namespace of VMIs when a call names none; default "default" (created if missing). */
  readonly namespace?: string;
  /** Requests in flight at once in bulk writes, default 32. */
  readonly concurrency?: number;
}

export interface ClusterVmi {
  readonly name: string;
  /** The Kubernetes namespace of the object. */
  readonly namespace: string;
  /** Lab node index (1-based). */
  readonly node: number;
  /** `node<i>`: the Node object and status.nodeName. */
  readonly nodeName: string;
  readonly address: string;
  readonly mac: string;
  readonly phase: VmiPhase;
  /** A lab VMI (a network namespace on the node's cni0) backs the object. */
  readonly plugged: boolean;
  /** The lab VMI's network namespace, when plugged. */
  readonly netns: string | undefined;
  /** The migrationState of the last completed move, undefined before any. */
  readonly migrationState: Readonly<Record<string, unknown>> | undefined;
}

export interface CreateVmiOptions {
  /** Kubernetes namespace, default the cluster's. */
  readonly namespace?: string;
  /** Default Running. */
  readonly phase?: VmiPhase;
  /** Address in the node's pod /24, default the next free one from .10. */
  readonly address?: string;
}

export interface BulkVmiSpec {
  readonly name: string;
  readonly node: number;
  readonly address?: string;
}

/**
 * Where a VMI's address comes from. "node": its node's pod /24. "spare": the pod network's
 * /24s that no node owns (after the last node's), one pool for the whole cluster, so two
 * nodes can hold thousands of VMI objects; inside the pod network (the agents'
 * --internal-net), never plugged (no node's cni0 serves it).
 */
export type AddressPool = "node" | "spare";

export interface CreateVmisOptions {
  readonly namespace?: string;
  readonly phase?: VmiPhase;
  /** Also make a lab VMI for each (default true); false writes the API objects only. */
  readonly plug?: boolean;
  /** Default "node"; "spare" needs `plug: false`. */
  readonly addressPool?: AddressPool;
  /** Requests in flight at once, default the cluster's. */
  readonly concurrency?: number;
}

export interface ClusterStartup {
  /** etcd and kube-apiserver up (certificates included). */
  readonly controlPlaneMs: number;
  /** The CRDs applied and established. */
  readonly crdsMs: number;
  /** Node objects and their status. */
  readonly nodesMs: number;
  readonly totalMs: number;
}

interface VmiRecord {
  name: string;
  namespace: string;
  node: number;
  address: string;
  phase: VmiPhase;
  plugged: boolean;
  /** Invented while no lab VMI backs the object; the lab VMI's own once plugged. */
  mac: string;
  migration: Record<string, unknown> | undefined;
  /** The node the kubevirt.io/nodeName label names, as last written. */
  labelNode: number | undefined;
}

interface KubeList {
  items: { metadata: { name: string; namespace?: string } }[];
}

/** metav1.Time: RFC 3339 in whole seconds. */
function kubeTime(date = new Date()): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function isStatus(err: unknown, status: number): boolean {
  return err instanceof KubeApiError && err.status === status;
}

function checkPhase(phase: string): VmiPhase {
  if (!PHASES.includes(phase as VmiPhase)) {
    throw new Error(`unknown VMI phase ${JSON.stringify(phase)}: one of ${PHASES.join(", ")}`);
  }
  return phase as VmiPhase;
}

const NAMESPACE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function checkNamespace(ns: string): string {
  if (!NAMESPACE_RE.test(ns)) throw new Error(`invalid namespace name ${JSON.stringify(ns)}`);
  return ns;
}

const clustered = new WeakSet<Lab>();

/**
 * Starts the control plane in the lab's router namespace on the router's management address,
 * installs the CRDs and writes the Node objects. The lab owns it: lab.down() stops it (and
 * so does cluster.stop()). On failure everything it started is stopped again.
 */
export async function startLabCluster(
  lab: Lab,
  options: LabClusterOptions = {},
): Promise<LabCluster> {
  if (!lab.active) throw new Error(`lab ${lab.prefix} is down`);
  if (clustered.has(lab)) throw new Error(`lab ${lab.prefix} already has a cluster`);
  const namespace = checkNamespace(options.namespace ?? "default");
  const router = lab.describe().router;
  await checkLoopbackUp(lab, router.namespace);
  clustered.add(lab);
  const dir = options.dir ?? join(lab.runDir, "cluster");
  await mkdir(dir, { recursive: true });
  const t0 = performance.now();
  let controlPlane: ControlPlane;
  try {
    controlPlane = await startControlPlane({
      dir,
      netns: router.namespace,
      address: router.mgmtAddress,
    });
  } catch (err) {
    clustered.delete(lab);
    throw err;
  }
  const t1 = performance.now();
  let cluster: LabCluster | undefined;
  let relay: LabProcess | undefined;
  let rest: KubeRest | undefined;
  const unhook = lab.onDown(async () => {
    if (cluster) await cluster.stop();
    else await controlPlane.stop();
  });
  try {
    const socketPath = join(dir, "apiserver.sock");
    const port = new URL(controlPlane.server).port;
    relay = await lab.spawnIn(
      router.namespace,
      [process.execPath, RELAY_SCRIPT, socketPath, router.mgmtAddress, port],
      { name: "apiserver-relay", waitFor: "LISTENING" },
    );
    const pki = pkiPaths(join(dir, "pki"));
    rest = await KubeRest.create({
      server: controlPlane.server,
      caFile: controlPlane.caCert,
      certFile: pki.adminCert,
      keyFile: pki.adminKey,
      socketPath,
      maxSockets: options.concurrency ?? 32,
    });
    await controlPlane.applyManifests([EIPBINDING_CRD, EIPPOOL_CRD, VMI_CRD]);
    await Promise.all(
      [EIPBINDING_CRD_NAME, EIPPOOL_CRD_NAME, VMI_CRD_NAME].map((crd) =>
        controlPlane.waitForCrdEstablished(crd),
      ),
    );
    const t2 = performance.now();
    cluster = new LabCluster(lab, controlPlane, rest, relay, socketPath, unhook, {
      namespace,
      concurrency: options.concurrency ?? 32,
    });
    await cluster.createNamespace(namespace);
    await cluster.writeNodes();
    const t3 = performance.now();
    cluster.startup = {
      controlPlaneMs: Math.round(t1 - t0),
      crdsMs: Math.round(t2 - t1),
      nodesMs: Math.round(t3 - t2),
      totalMs: Math.round(t3 - t0),
    };
    await cluster.writeDescription();
    return cluster;
  } catch (err) {
    unhook();
    rest?.close();
    await relay?.stop();
    await controlPlane.stop();
    clustered.delete(lab);
    throw err;
  }
}

/** The control plane needs loopback (etcd listens there); the lab brings it up in the router. */
async function checkLoopbackUp(lab: Lab, ns: string): Promise<void> {
  const { stdout } = await lab.exec(ns, ["ip", "-j", "link", "show", "lo"]);
  const [lo] = JSON.parse(stdout) as { flags?: string[] }[];
  if (!lo?.flags?.includes("UP")) throw new Error(`loopback is down in ${ns}`);
}

export class LabCluster {
  readonly controlPlane: ControlPlane;
  /** Admin kubeconfig (system:masters), for kubectl and for processes in the lab. */
  readonly kubeconfig: string;
  /** https://<router mgmt address>:6443 */
  readonly server: string;
  /** Where the apiserver runs, and where a process that talks to it should run. */
  readonly routerNamespace: string;
  /** Namespace of VMIs when a call names none. */
  readonly namespace: string;
  /** The control plane's run dir. */
  readonly dir: string;
  /** A Unix socket relaying to the apiserver, for clients outside the lab's namespaces. */
  readonly apiSocket: string;
  /** The REST API as admin (through apiSocket). */
  readonly api: KubeRest;
  startup: ClusterStartup = { controlPlaneMs: 0, crdsMs: 0, nodesMs: 0, totalMs: 0 };
  private readonly concurrency: number;
  private readonly vmis = new Map<string, VmiRecord>();
  private nextMac = 1;
  private stopping: Promise<void> | undefined;

  /** Use startLabCluster(). */
  constructor(
    readonly lab: Lab,
    controlPlane: ControlPlane,
    api: KubeRest,
    private readonly relay: LabProcess,
    apiSocket: string,
    private readonly unhook: () => void,
    options: { namespace: string; concurrency: number },
  ) {
    this.controlPlane = controlPlane;
    this.kubeconfig = controlPlane.kubeconfig;
    this.server = controlPlane.server;
    this.dir = controlPlane.dir;
    this.routerNamespace = lab.names.router;
    this.namespace = options.namespace;
    this.apiSocket = apiSocket;
    this.api = api;
    this.concurrency = options.concurrency;
  }

  // ---- kubectl, namespaces, nodes ----

  /** Runs kubectl (the built one, admin kubeconfig) in the router namespace; its stdout. */
  kubectl(args: readonly string[], input?: string): Promise<string> {
    return this.controlPlane.kubectl.run(args, input === undefined ? {} : { input });
  }

  /** The command line that runs kubectl against this cluster, for people to copy. */
  kubectlCommand(args: readonly string[] = []): string[] {
    return [
      "ip",
      "netns",
      "exec",
      this.routerNamespace,
      this.controlPlane.binaries.kubectl,
      "--kubeconfig",
      this.kubeconfig,
      ...args,
    ];
  }

  /**
   * What a process talking to the cluster needs in its environment (KUBECONFIG). Start it in
   * the router namespace, which reaches the apiserver and every node's agent:
   * `lab.spawnIn(cluster.routerNamespace, argv, { env: cluster.operatorEnv() })`.
   */
  operatorEnv(): Record<string, string> {
    return { KUBECONFIG: this.kubeconfig };
  }

  /** `kubectl apply` of an EipBinding of `eip` to the VMI `vmi`, as a user would; its output. */
  applyEipBinding(
    name: string,
    eip: string,
    vmi: string,
    namespace = this.namespace,
  ): Promise<string> {
    return this.kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "extension.lucheng0127/v1",
        kind: "EipBinding",
        metadata: { name, namespace },
        spec: { eipAddr: eip, vmiName: vmi },
      }),
    );
  }

  /** Creates a namespace; one that exists is fine. */
  async createNamespace(name: string): Promise<void> {
    checkNamespace(name);
    try {
      await this.api.post("/api/v1/namespaces", {
        apiVersion: "v1",
        kind: "Namespace",
        metadata: { name },
      });
    } catch (err) {
      if (!isStatus(err, 409)) throw err;
    }
  }

  /** `node<i>`: the Node object of lab node i. */
  nodeName(i: number): string {
    return this.lab.node(i).name;
  }

  /** The node's InternalIP: its management address. */
  nodeAddress(i: number): string {
    return this.lab.node(i).mgmtAddress;
  }

  /** Where node i's agent listens for the operator: `<InternalIP>:6127`. */
  nodeAgentAddress(i: number): string {
    return `${this.nodeAddress(i)}:${AGENT_PORT}`;
  }

  /** Node objects as a kubelet registers them, with status through the status subresource. */
  async writeNodes(): Promise<void> {
    const nodes = Array.from({ length: this.lab.nodeCount }, (_, k) => this.lab.node(k + 1));
    const version = this.controlPlane.binaries.version;
    await mapLimit(nodes, this.concurrency, async (n) => {
      await this.api.post("/api/v1/nodes", {
        apiVersion: "v1",
        kind: "Node",
        metadata: {
          name: n.name,
          labels: {
            "kubernetes.io/hostname": n.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubevirt.io/schedulable": "true",
          },
          annotations: { "kube-eip.lab/netns": n.namespace },
        },
        spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr] },
      });
      const now = kubeTime();
      const condition = (type: string, status: string, reason: string, message: string) => ({
        type,
        status,
        reason,
        message,
        lastHeartbeatTime: now,
        lastTransitionTime: now,
      });
      const resources = { cpu: "2", memory: "8Gi", pods: "110", "devices.kubevirt.io/kvm": "1k" };
      await this.api.mergePatch(`/api/v1/nodes/${n.name}/status`, {
        status: {
          addresses: [
            { type: "InternalIP", address: n.mgmtAddress },
            { type: "Hostname", address: n.name },
          ],
          conditions: [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "lab node"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "lab node"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "lab node"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
          ],
          capacity: resources,
          allocatable: resources,
          daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
          nodeInfo: {
            machineID: "",
            systemUUID: "",
            bootID: "",
            kernelVersion: release(),
            osImage: `kube-eip lab (network namespace ${n.namespace})`,
            containerRuntimeVersion: "none://",
            kubeletVersion: version,
            kubeProxyVersion: "",
            operatingSystem: "linux",
            architecture: "amd64",
          },
        },
      });
    });
  }

  /** cluster.json in the run dir: where other processes find the kubeconfig and the server. */
  async writeDescription(): Promise<void> {
    const pids = this.controlPlane.pids();
    const description = {
      kind: "kube-eip-lab-cluster",
      lab: this.lab.prefix,
      server: this.server,
      kubeconfig: this.kubeconfig,
      routerNamespace: this.routerNamespace,
      kubectl: this.controlPlane.binaries.kubectl,
      apiSocket: this.apiSocket,
      version: this.controlPlane.binaries.version,
      pids: { etcd: pids.etcd, apiServer: pids.apiServer, relay: this.relay.pid },
      nodes: Array.from({ length: this.lab.nodeCount }, (_, k) => ({
        name: this.nodeName(k + 1),
        internalIP: this.nodeAddress(k + 1),
        agent: this.nodeAgentAddress(k + 1),
      })),
    };
    await writeFile(join(this.dir, CLUSTER_FILE), JSON.stringify(description, null, 2) + "\n");
  }

  // ---- VMIs ----

  private record(name: string): VmiRecord {
    const rec = this.vmis.get(name);
    if (!rec) throw new Error(`no VMI ${JSON.stringify(name)} in the cluster`);
    return rec;
  }

  private info(rec: VmiRecord): ClusterVmi {
    return {
      name: rec.name,
      namespace: rec.namespace,
      node: rec.node,
      nodeName: this.nodeName(rec.node),
      address: rec.address,
      mac: rec.mac,
      phase: rec.phase,
      plugged: rec.plugged,
      netns: rec.plugged ? this.lab.names.vmi(rec.name) : undefined,
      migrationState: rec.migration,
    };
  }

  vmi(name: string): ClusterVmi {
    return this.info(this.record(name));
  }

  listVmis(): ClusterVmi[] {
    return [...this.vmis.values()].map((rec) => this.info(rec));
  }

  /** The VMI object as the apiserver holds it. */
  getVmiObject(name: string): Promise<Record<string, unknown>> {
    const rec = this.record(name);
    return this.api.get(this.vmiPath(rec.namespace, rec.name));
  }

  private vmiPath(namespace: string, name?: string): string {
    const base = `/apis/kubevirt.io/v1/namespaces/${namespace}/virtualmachineinstances`;
    return name === undefined ? base : `${base}/${name}`;
  }

  /** Addresses taken on the node: cni0, the pod, lab VMIs and this cluster's VMIs. */
  private usedAddresses(node: number): Set<string> {
    const used = new Set([this.lab.node(node).bridgeAddress]);
    if (this.lab.podNode === node) used.add(this.lab.pod().address);
    for (const v of this.lab.listVmis()) if (v.node === node) used.add(v.address);
    for (const rec of this.vmis.values()) if (rec.node === node) used.add(rec.address);
    return used;
  }

  /** The requested address if it is the node's and free; else the next free from .10 (then .2). */
  private pickAddress(node: number, requested: string | undefined): string {
    const used = this.usedAddresses(node);
    const a = this.lab.addressing;
    if (requested !== undefined) {
      const host = Number(requested.split(".")[3]);
      if (!isIpv4(requested) || a.nodeOfPodAddress(requested, this.lab.nodeCount) !== node) {
        throw new Error(`${requested} is not an address in node ${node}'s ${a.podCidr(node)}`);
      }
      if (host === 0 || host === 255 || used.has(requested)) {
        throw new Error(`${requested} is not free on node ${node}`);
      }
      return requested;
    }
    const first = this.lab.topology.firstVmiHost;
    const hosts = [
      ...Array.from({ length: 255 - first }, (_, k) => first + k),
      ...Array.from({ length: Math.max(0, first - 2) }, (_, k) => 2 + k),
    ];
    for (const host of hosts) {
      const address = a.podAddress(node, host);
      if (!used.has(address)) return address;
    }
    throw new Error(
      `no free address left in node ${node}'s ${a.podCidr(node)} (${used.size} taken): use more nodes`,
    );
  }

  /**
   * The requested address if it is in the spare pool and free; else the next free one. The
   * pool is the pod network after the last node's /24, host parts .1 to .254 of each /24.
   */
  private pickSpareAddress(requested: string | undefined): string {
    const used = new Set([...this.vmis.values()].map((rec) => rec.address));
    const net = this.lab.addressing.podNet;
    const first = net.base + (this.lab.nodeCount + 1) * 256;
    const end = net.base + 2 ** (32 - net.prefix);
    const usable = (value: number) =>
      value >= first && value < end && value % 256 !== 0 && value % 256 !== 255;
    const range = `${formatIpv4(first)} to ${formatIpv4(end - 1)}`;
    if (requested !== undefined) {
      const value = parseIpv4(requested);
      if (value === undefined || !usable(value)) {
        throw new Error(`${requested} is not an address of the spare pool (${range})`);
      }
      if (used.has(requested)) throw new Error(`${requested} is not free`);
      return requested;
    }
    for (let value = first; value < end; value++) {
      const address = formatIpv4(value);
      if (usable(value) && !used.has(address)) return address;
    }
    throw new Error(`no free address left in the spare pool (${range})`);
  }

  /** A locally administered MAC for objects without a lab VMI (the lab's own use 02:ee:03). */
  private inventedMac(): string {
    const n = this.nextMac++;
    const hex = (v: number) => (v & 255).toString(16).padStart(2, "0");
    return `02:ee:06:${hex(n >> 16)}:${hex(n >> 8)}:${hex(n)}`;
  }

  /** Validates and reserves a name and an address (before anything is awaited). */
  private reserve(
    spec: BulkVmiSpec,
    namespace: string,
    phase: VmiPhase,
    pool: AddressPool,
  ): VmiRecord {
    checkVmiName(spec.name);
    checkNamespace(namespace);
    this.lab.node(spec.node);
    if (this.vmis.has(spec.name)) throw new Error(`VMI ${spec.name} exists in the cluster`);
    if (this.lab.listVmis().some((v) => v.name === spec.name)) {
      throw new Error(`the lab already has a VMI ${spec.name}`);
    }
    const rec: VmiRecord = {
      name: spec.name,
      namespace,
      node: spec.node,
      address:
        pool === "spare"
          ? this.pickSpareAddress(spec.address)
          : this.pickAddress(spec.node, spec.address),
      phase,
      plugged: false,
      mac: this.inventedMac(),
      migration: undefined,
      labelNode: undefined,
    };
    this.vmis.set(rec.name, rec);
    return rec;
  }

  private vmiObject(rec: VmiRecord): Record<string, unknown> {
    const placed = PLACED.has(rec.phase);
    return {
      apiVersion: "kubevirt.io/v1",
      kind: "VirtualMachineInstance",
      metadata: {
        name: rec.name,
        namespace: rec.namespace,
        labels: {
          "kubevirt.io/domain": rec.name,
          ...(placed ? { [NODE_NAME_LABEL]: this.nodeName(rec.node) } : {}),
        },
        annotations: {
          "kubevirt.io/latest-observed-api-version": "v1",
          "kubevirt.io/storage-observed-api-version": "v1",
        },
      },
      spec: {
        domain: {
          cpu: { cores: 1, sockets: 1, threads: 1 },
          memory: { guest: "128Mi" },
          resources: { requests: { memory: "128Mi" } },
          machine: { type: "q35" },
          devices: {
            disks: [{ name: "containerdisk", disk: { bus: "virtio" } }],
            interfaces: [{ name: "default", bridge: {} }],
          },
        },
        networks: [{ name: "default", pod: {} }],
        volumes: [
          {
            name: "containerdisk",
            containerDisk: { image: "quay.io/kubevirt/cirros-container-disk-demo:latest" },
          },
        ],
        terminationGracePeriodSeconds: 0,
      },
    };
  }

  /**
   * The whole status virt-handler would hold for the record, as a merge patch: fields that
   * do not apply in the phase are null (removed).
   */
  private vmiStatus(rec: VmiRecord): Record<string, unknown> {
    const placed = PLACED.has(rec.phase);
    const reported = REPORTED.has(rec.phase);
    return {
      phase: rec.phase,
      nodeName: placed ? this.nodeName(rec.node) : null,
      interfaces: reported
        ? [
            {
              name: "default",
              interfaceName: "eth0",
              ipAddress: rec.address,
              ipAddresses: [rec.address],
              mac: rec.mac,
              infoSource: "domain, guest-agent",
              queueCount: 1,
            },
          ]
        : null,
      conditions: [
        {
          type: "Ready",
          status: rec.phase === "Running" ? "True" : "False",
          lastProbeTime: null,
          lastTransitionTime: kubeTime(),
        },
      ],
      migrationState: rec.migration ?? null,
      qosClass: "Burstable",
    };
  }

  /** Writes the record's status through the status subresource; resolves when answered. */
  private async writeStatus(rec: VmiRecord): Promise<number> {
    await this.api.mergePatch(`${this.vmiPath(rec.namespace, rec.name)}/status`, {
      status: this.vmiStatus(rec),
    });
    return performance.now();
  }

  /** The kubevirt.io/nodeName label, as virt-controller keeps it, when it changed. */
  private async syncLabel(rec: VmiRecord): Promise<void> {
    const want = PLACED.has(rec.phase) ? rec.node : undefined;
    if (want === rec.labelNode) return;
    await this.api.mergePatch(this.vmiPath(rec.namespace, rec.name), {
      metadata: { labels: { [NODE_NAME_LABEL]: want === undefined ? null : this.nodeName(want) } },
    });
    rec.labelNode = want;
  }

  private async plug(rec: VmiRecord): Promise<void> {
    const info = await this.lab.addVmi(rec.name, rec.node, rec.address);
    rec.mac = info.mac;
    rec.plugged = true;
  }

  private async writeObject(rec: VmiRecord): Promise<void> {
    await this.api.post(this.vmiPath(rec.namespace), this.vmiObject(rec));
    rec.labelNode = PLACED.has(rec.phase) ? rec.node : undefined;
    await this.writeStatus(rec);
  }

  /** Undoes a VMI that failed half-way: its lab VMI, its object, its record. Best effort. */
  private async discard(rec: VmiRecord): Promise<void> {
    this.vmis.delete(rec.name);
    if (rec.plugged) await this.lab.removeVmi(rec.name).catch(() => {});
    await this.api.delete(this.vmiPath(rec.namespace, rec.name)).catch(() => {});
  }

  /**
   * A VMI as a cluster holds it: a lab VMI on node `node` (1-based), then the object, then
   * its status (phase, nodeName, interfaces[0].ipAddress) through the status subresource.
   */
  async createVmi(name: string, node: number, options: CreateVmiOptions = {}): Promise<ClusterVmi> {
    const [vmi] = await this.createVmis([{ name, node, address: options.address }], {
      namespace: options.namespace,
      phase: options.phase,
      plug: true,
    });
    if (!vmi) throw new Error(`VMI ${name} was not created`);
    return vmi;
  }

  /**
   * Many VMIs at once. With `plug: false` only the API objects (addresses reserved from
   * each node's pod /24, or with `addressPool: "spare"` from the spare pool; nothing
   * plugged; plugVmi() plugs one of the node's later): each is a create and a status write
   * over the REST API, `concurrency` requests at a time. Names are unique across the
   * cluster's namespaces. On failure the VMIs of this call are removed again.
   */
  async createVmis(
    specs: readonly BulkVmiSpec[],
    options: CreateVmisOptions = {},
  ): Promise<ClusterVmi[]> {
    this.checkRunning();
    const namespace = options.namespace ?? this.namespace;
    const phase = checkPhase(options.phase ?? "Running");
    const plug = options.plug ?? true;
    const pool = options.addressPool ?? "node";
    if (pool === "spare" && plug) throw new Error('addressPool "spare" needs plug: false');
    const names = new Set<string>();
    for (const s of specs) {
      if (names.has(s.name)) throw new Error(`VMI ${s.name} is named twice`);
      names.add(s.name);
    }
    const records: VmiRecord[] = [];
    try {
      for (const s of specs) records.push(this.reserve(s, namespace, phase, pool));
    } catch (err) {
      for (const rec of records) this.vmis.delete(rec.name);
      throw err;
    }
    if (namespace !== this.namespace) await this.createNamespace(namespace);
    try {
      // Namespaces and veths: a few `ip` commands each, so fewer at a time than requests.
      if (plug) await mapLimit(records, 4, (rec) => this.plug(rec));
      await mapLimit(records, options.concurrency ?? this.concurrency, (rec) =>
        this.writeObject(rec),
      );
    } catch (err) {
      await mapLimit(records, 8, (rec) => this.discard(rec));
      throw err;
    }
    return records.map((rec) => this.info(rec));
  }

  /** Plugs a lab VMI in for an object created with `plug: false` (its node and address). */
  async plugVmi(name: string): Promise<ClusterVmi> {
    this.checkRunning();
    const rec = this.record(name);
    if (rec.plugged) throw new Error(`VMI ${name} is plugged already`);
    if (this.lab.addressing.nodeOfPodAddress(rec.address, this.lab.nodeCount) !== rec.node) {
      throw new Error(
        `VMI ${name} has ${rec.address}, outside node ${rec.node}'s /24: not pluggable`,
      );
    }
    await this.plug(rec);
    // The interface's MAC is now the lab VMI's: reported as virt-handler would.
    await this.writeStatus(rec);
    return this.info(rec);
  }

  /**
   * Writes the phase (status subresource) as virt-handler or virt-controller would: nodeName
   * from Scheduled on, interfaces from Running on. The lab VMI is left as it is. Resolves to
   * the moment the apiserver answered the status write (performance.now()).
   */
  async setVmiPhase(name: string, phase: VmiPhase): Promise<number> {
    this.checkRunning();
    const rec = this.record(name);
    rec.phase = checkPhase(phase);
    const at = await this.writeStatus(rec);
    await this.syncLabel(rec);
    return at;
  }

  /**
   * A completed live migration: the lab VMI is re-plugged into node `toNode` with a new
   * address (`newAddress` or the next free one), then the status says so (nodeName,
   * interfaces[0].ipAddress, migrationState completed with source and target node), then
   * the kubevirt.io/nodeName label follows. Resolves to the moment the apiserver answered
   * the status write (performance.now()); a watcher may see it a moment earlier.
   */
  async moveVmi(
    name: string,
    toNode: number,
    options: { newAddress?: string } = {},
  ): Promise<number> {
    this.checkRunning();
    const rec = this.record(name);
    this.lab.node(toNode);
    if (rec.node === toNode) throw new Error(`VMI ${name} is already on node ${toNode}`);
    const address = this.pickAddress(toNode, options.newAddress);
    const startTimestamp = kubeTime();
    if (rec.plugged) await this.lab.moveVmi(name, toNode, address);
    const from = rec.node;
    rec.node = toNode;
    rec.address = address;
    const uid = randomUUID();
    rec.migration = {
      migrationUid: uid,
      mode: "PreCopy",
      startTimestamp,
      endTimestamp: kubeTime(),
      sourceNode: this.nodeName(from),
      targetNode: this.nodeName(toNode),
      targetNodeAddress: this.nodeAddress(toNode),
      sourcePod: `virt-launcher-${name}-${uid.slice(0, 5)}`,
      targetPod: `virt-launcher-${name}-${uid.slice(-5)}`,
      completed: true,
      failed: false,
    };
    const at = await this.writeStatus(rec);
    await this.syncLabel(rec);
    return at;
  }

  /** The VM stops (its lab VMI is removed), then its object is deleted. */
  async deleteVmi(name: string): Promise<void> {
    this.checkRunning();
    const rec = this.record(name);
    if (rec.plugged) {
      await this.lab.removeVmi(name);
      rec.plugged = false;
    }
    try {
      await this.api.delete(this.vmiPath(rec.namespace, rec.name));
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
    this.vmis.delete(name);
  }

  /** Names of the VMI objects in a namespace, as the apiserver lists them. */
  async listVmiObjects(namespace = this.namespace): Promise<string[]> {
    const list = await this.api.get<KubeList>(this.vmiPath(namespace));
    return list.items.map((i) => i.metadata.name);
  }

  /** The lab node index of a Node name (`node<i>`). */
  nodeOf(nodeName: string): number {
    for (let i = 1; i <= this.lab.nodeCount; i++) if (this.nodeName(i) === nodeName) return i;
    throw new Error(`no node ${nodeName}`);
  }

  // ---- teardown ----

  private checkRunning(): void {
    if (this.stopping) throw new Error("the lab's cluster is stopped");
  }

  /** Stops the relay and the control plane (lab.down() does it too). Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.unhook();
      this.api.close();
      await this.relay.stop();
      await this.controlPlane.stop();
      clustered.delete(this.lab);
    })();
    return this.stopping;
  }
}
