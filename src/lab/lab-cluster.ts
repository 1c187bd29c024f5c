// LabCluster: the lab as a Kubernetes cluster once startLabCluster (cluster.ts) has started
// it: kubectl and the REST API as admin, the Node objects, and the VMIs, each both a lab VMI
// and a kubevirt.io/v1 VirtualMachineInstance whose status the cluster writes as
// virt-handler would (the objects in cluster-objects.ts, their addresses from
// cluster-addresses.ts).
import { randomUUID } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { ControlPlane } from "../kube-lab/control-plane.js";
import { KubeApiError, KubeRest, mapLimit } from "./kube-rest.js";
import type { Lab, LabProcess } from "./lab.js";
import {
  type VmiPhase,
  type VmiRecord,
  NODE_NAME_LABEL,
  PLACED,
  checkNamespace,
  checkPhase,
  kubeTime,
  nodeObject,
  nodeStatusPatch,
  vmiObject,
  vmiStatusPatch,
} from "./cluster-objects.js";
import { pickPodAddress, pickSpareAddress } from "./cluster-addresses.js";
import {
  AGENT_PORT,
  type AddressPool,
  type BulkVmiSpec,
  CLUSTER_FILE,
  type ClusterStartup,
  type ClusterVmi,
  type CreateVmiOptions,
  type CreateVmisOptions,
} from "./cluster-types.js";
import { checkVmiName } from "./topology.js";

interface KubeList {
  items: { metadata: { name: string; namespace?: string } }[];
}

function isStatus(err: unknown, status: number): boolean {
  return err instanceof KubeApiError && err.status === status;
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
    /** Tells startLabCluster the lab may have a cluster again. */
    private readonly released: () => void,
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
      await this.api.post("/api/v1/nodes", nodeObject(n));
      await this.api.mergePatch(`/api/v1/nodes/${n.name}/status`, nodeStatusPatch(n, version));
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
          ? pickSpareAddress(this.lab, this.vmis.values(), spec.address)
          : pickPodAddress(this.lab, this.vmis.values(), spec.node, spec.address),
      phase,
      plugged: false,
      mac: this.inventedMac(),
      migration: undefined,
      labelNode: undefined,
      ownerReferences: spec.ownerReferences,
    };
    this.vmis.set(rec.name, rec);
    return rec;
  }

  /** Writes the record's status through the status subresource; resolves when answered. */
  private async writeStatus(rec: VmiRecord): Promise<number> {
    await this.api.mergePatch(`${this.vmiPath(rec.namespace, rec.name)}/status`, {
      status: vmiStatusPatch(rec, this.nodeName(rec.node)),
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
    await this.api.post(this.vmiPath(rec.namespace), vmiObject(rec, this.nodeName(rec.node)));
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
    const { address, ownerReferences } = options;
    const [vmi] = await this.createVmis([{ name, node, address, ownerReferences }], {
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
   * address (`newAddress` or the next free one), or with `keepAddress` migrated keeping its
   * own (Lab.migrateVmi), then the status says so (nodeName, interfaces[0].ipAddress,
   * migrationState completed with source and target node), then the kubevirt.io/nodeName
   * label follows. Resolves to the moment the apiserver answered the status write
   * (performance.now()); a watcher may see it a moment earlier.
   */
  async moveVmi(
    name: string,
    toNode: number,
    options: { newAddress?: string; keepAddress?: boolean } = {},
  ): Promise<number> {
    this.checkRunning();
    const rec = this.record(name);
    this.lab.node(toNode);
    if (rec.node === toNode) throw new Error(`VMI ${name} is already on node ${toNode}`);
    if (options.keepAddress && options.newAddress !== undefined) {
      throw new Error("moveVmi: keepAddress and newAddress exclude each other");
    }
    const address = options.keepAddress
      ? rec.address
      : pickPodAddress(this.lab, this.vmis.values(), toNode, options.newAddress);
    const startTimestamp = kubeTime();
    if (rec.plugged && options.keepAddress) await this.lab.migrateVmi(name, toNode);
    else if (rec.plugged) await this.lab.moveVmi(name, toNode, address);
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
      this.released();
    })();
    return this.stopping;
  }
}
