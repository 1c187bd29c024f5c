// The scale benchmark's cluster: a real etcd and kube-apiserver (src/kube-lab) on loopback
// with our CRDs and KubeVirt's VMI CRD, the simulated nodes' Node objects (InternalIP on
// 127.0.1.0/24, Ready), a namespace, one Running VMI per binding spread over the nodes, and
// for the pools run a default EipPool holding every address the bindings get.
import { fileURLToPath } from "node:url";
import { formatIpv4, parseIpv4 } from "../../src/common/ipv4.js";
import { type ControlPlane, startControlPlane } from "../../src/kube-lab/control-plane.js";
import { KubeClient, NODES, VMIS } from "../../src/kube/client.js";
import { loadKubeConfig } from "../../src/kube/config.js";
import { mapLimit } from "../../src/lab/kube-rest.js";
import { EIPPOOLS, NAMESPACES } from "../../src/operator/pools/kube.js";

const CRDS = fileURLToPath(new URL("../../../config/crd/bases", import.meta.url));
const VMI_CRD = fileURLToPath(
  new URL("../../../e2e/fixtures/kubevirt-vmi-crd.yaml", import.meta.url),
);

export const NAMESPACE = "scale";
/** The agents accept EIPs here; the pool is the /18 at its start (16,381 addresses). */
export const EIP_CIDR = "100.64.0.0/16";
export const POOL_CIDR = "100.64.0.0/18";
export const GATEWAY_IP = "100.64.255.254";
export const INTERNAL_NET = "10.128.0.0/14";
/** Writes in flight at once, as a bulk apply would (operator-bench uses the same). */
export const WRITE_CONCURRENCY = 32;

const POOL_BASE = parseIpv4("100.64.0.0") as number;
const VMI_BASE = parseIpv4("10.128.0.0") as number;

/** Binding i's address: the one the pool hands out i-th (lowest first, .0 skipped). */
export const eipOf = (i: number) => formatIpv4(POOL_BASE + 1 + i);
export const vmiName = (i: number) => `vm-${i}`;
export const vmiAddress = (i: number) => formatIpv4(VMI_BASE + 1 + i);
export const nodeName = (k: number) => `sim-node-${k}`;
export const nodeIp = (k: number) => `127.0.1.${1 + k}`;
export const nodeOf = (i: number, nodes: number) => i % nodes;

export interface ScaleCluster {
  readonly cp: ControlPlane;
  readonly client: KubeClient;
  stop(): Promise<void>;
}

export async function startScaleCluster(dir: string): Promise<ScaleCluster> {
  const cp = await startControlPlane({ dir });
  try {
    await cp.applyManifests([CRDS, VMI_CRD]);
    for (const crd of [
      "eipbindings.extension.lucheng0127",
      "eippools.extension.lucheng0127",
      "virtualmachineinstances.kubevirt.io",
    ]) {
      await cp.waitForCrdEstablished(crd);
    }
  } catch (err) {
    await cp.stop();
    throw err;
  }
  const client = new KubeClient(loadKubeConfig({ kubeconfig: cp.kubeconfig }), {
    userAgent: "scale-bench",
  });
  return {
    cp,
    client,
    async stop() {
      client.close();
      await cp.stop();
    },
  };
}

/** The namespace, the Nodes and the VMIs (untimed: the world before the bindings). */
export async function populate(
  c: ScaleCluster,
  opts: { nodes: number; bindings: number; pool: boolean },
): Promise<void> {
  const { client } = c;
  await client.create(NAMESPACES, undefined, { metadata: { name: NAMESPACE } });
  const now = new Date().toISOString();
  await mapLimit(
    Array.from({ length: opts.nodes }, (_, k) => k),
    WRITE_CONCURRENCY,
    async (k) => {
      await client.create(NODES, undefined, { metadata: { name: nodeName(k) } });
      await client.patch(
        NODES,
        undefined,
        nodeName(k),
        {
          status: {
            addresses: [{ type: "InternalIP", address: nodeIp(k) }],
            conditions: [
              {
                type: "Ready",
                status: "True",
                reason: "KubeletReady",
                message: "simulated",
                lastHeartbeatTime: now,
                lastTransitionTime: now,
              },
            ],
          },
        },
        { type: "merge", subresource: "status" },
      );
    },
  );
  await mapLimit(
    Array.from({ length: opts.bindings }, (_, i) => i),
    WRITE_CONCURRENCY,
    async (i) => {
      await client.create(VMIS, NAMESPACE, {
        apiVersion: "kubevirt.io/v1",
        kind: "VirtualMachineInstance",
        metadata: { name: vmiName(i), namespace: NAMESPACE },
        spec: {},
      });
      await client.patch(
        VMIS,
        NAMESPACE,
        vmiName(i),
        {
          status: {
            phase: "Running",
            nodeName: nodeName(nodeOf(i, opts.nodes)),
            interfaces: [{ ipAddress: vmiAddress(i) }],
          },
        },
        { type: "merge", subresource: "status" },
      );
    },
  );
  if (opts.pool) {
    await client.create(EIPPOOLS, undefined, {
      apiVersion: "extension.lucheng0127/v1",
      kind: "EipPool",
      metadata: { name: "public" },
      spec: { addresses: [POOL_CIDR], default: true },
    });
  }
}
