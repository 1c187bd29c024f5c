// KubeVirt VirtualMachines in the lab's cluster. The lab plays virt-controller: starting a
// VM creates its VMI (a lab VMI on a node, and the VirtualMachineInstance of the VM's name
// with the VM as its controller owner, as virt-controller makes it), stopping it deletes the
// VMI, and the VM's status says which (printableStatus, ready, created). Deleting a VM
// deletes its VMI first, as the garbage collector would; nothing else is collected (the
// lab runs no garbage collector: objects the VM owns stay unless their own controller
// removes them).
import type { ClusterVmi, LabCluster } from "./cluster.js";
import { kubeTime } from "./cluster-objects.js";

export interface CreateVmOptions {
  /** Kubernetes namespace, default the cluster's. */
  readonly namespace?: string;
  /** The VM's metadata.annotations. */
  readonly annotations?: Readonly<Record<string, string>>;
  /** spec.template.metadata.annotations (KubeVirt copies them to its VMIs; the lab does not). */
  readonly templateAnnotations?: Readonly<Record<string, string>>;
  /** Start it on this node (1-based) at once; default: created stopped (runStrategy Halted). */
  readonly node?: number;
}

/** The VirtualMachine as the apiserver holds it, as far as the lab reads it. */
export interface VmObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace: string;
    readonly uid: string;
    readonly annotations?: Record<string, string>;
  };
  readonly spec: { readonly runStrategy?: string };
  readonly status?: { readonly printableStatus?: string; readonly ready?: boolean };
}

function vmPath(namespace: string, name?: string): string {
  const base = `/apis/kubevirt.io/v1/namespaces/${namespace}/virtualmachines`;
  return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
}

/** The VM object a user would create: a template like the lab's VMIs. */
export function vmObject(name: string, namespace: string, options: CreateVmOptions): object {
  return {
    apiVersion: "kubevirt.io/v1",
    kind: "VirtualMachine",
    metadata: {
      name,
      namespace,
      ...(options.annotations ? { annotations: options.annotations } : {}),
    },
    spec: {
      runStrategy: "Halted",
      template: {
        metadata: {
          labels: { "kubevirt.io/domain": name },
          ...(options.templateAnnotations ? { annotations: options.templateAnnotations } : {}),
        },
        spec: {
          domain: {
            cpu: { cores: 1 },
            memory: { guest: "128Mi" },
            devices: { interfaces: [{ name: "default", bridge: {} }] },
          },
          networks: [{ name: "default", pod: {} }],
          terminationGracePeriodSeconds: 0,
        },
      },
    },
  };
}

export class LabVms {
  constructor(private readonly cluster: LabCluster) {}

  /** Creates the VirtualMachine (and starts it when `node` is given). */
  async create(name: string, options: CreateVmOptions = {}): Promise<VmObject> {
    const namespace = options.namespace ?? this.cluster.namespace;
    if (namespace !== this.cluster.namespace) await this.cluster.createNamespace(namespace);
    await this.cluster.api.post(vmPath(namespace), vmObject(name, namespace, options));
    await this.writeStatus(namespace, name, false);
    if (options.node !== undefined) await this.start(name, options.node, { namespace });
    return this.get(name, namespace);
  }

  get(name: string, namespace = this.cluster.namespace): Promise<VmObject> {
    return this.cluster.api.get<VmObject>(vmPath(namespace, name));
  }

  /**
   * `virtctl start`, then virt-controller: runStrategy Always, then a VMI of the VM's name on
   * node `node`, controlled by the VM, then the VM's status says it runs.
   */
  async start(
    name: string,
    node: number,
    options: { namespace?: string; address?: string } = {},
  ): Promise<ClusterVmi> {
    const namespace = options.namespace ?? this.cluster.namespace;
    const vm = await this.get(name, namespace);
    await this.cluster.api.mergePatch(vmPath(namespace, name), { spec: { runStrategy: "Always" } });
    const vmi = await this.cluster.createVmi(name, node, {
      namespace,
      ...(options.address ? { address: options.address } : {}),
      ownerReferences: [
        {
          apiVersion: "kubevirt.io/v1",
          kind: "VirtualMachine",
          name,
          uid: vm.metadata.uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    });
    await this.writeStatus(namespace, name, true);
    return vmi;
  }

  /** `virtctl stop`: runStrategy Halted, the VMI deleted (its lab VMI removed), status Stopped. */
  async stop(name: string, namespace = this.cluster.namespace): Promise<void> {
    await this.cluster.api.mergePatch(vmPath(namespace, name), { spec: { runStrategy: "Halted" } });
    if (this.cluster.listVmis().some((v) => v.name === name)) await this.cluster.deleteVmi(name);
    await this.writeStatus(namespace, name, false);
  }

  /** Deletes the VM: its VMI first (the garbage collector's part), then the object. */
  async delete(name: string, namespace = this.cluster.namespace): Promise<void> {
    if (this.cluster.listVmis().some((v) => v.name === name)) await this.cluster.deleteVmi(name);
    await this.cluster.api.delete(vmPath(namespace, name));
  }

  /** The status virt-controller keeps on a VM, through the status subresource. */
  private async writeStatus(namespace: string, name: string, running: boolean): Promise<void> {
    await this.cluster.api.mergePatch(`${vmPath(namespace, name)}/status`, {
      status: {
        printableStatus: running ? "Running" : "Stopped",
        ready: running,
        created: running,
        conditions: [
          {
            type: "Ready",
            status: running ? "True" : "False",
            lastProbeTime: null,
            lastTransitionTime: kubeTime(),
          },
        ],
      },
    });
  }
}
