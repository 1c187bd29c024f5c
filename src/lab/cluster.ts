// The lab as a Kubernetes cluster: a real etcd and kube-apiserver (src/kube-lab) inside the
// router namespace, listening on the router's management address, which every node (and an
// operator started in the router namespace) reaches; our CRDs and KubeVirt's VMI and VM
// CRDs; one Node object per lab node, named and addressed as the lab names it. The tests and
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
//
// This file starts it; the cluster itself is lab-cluster.ts, its constants and types
// cluster-types.ts, the objects it writes cluster-objects.ts, its addresses
// cluster-addresses.ts. Callers import all of it from here.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { startControlPlane, type ControlPlane } from "../kube-lab/control-plane.js";
import { pkiPaths } from "../kube-lab/pki.js";
import { checkNamespace } from "./cluster-objects.js";
import { KubeRest } from "./kube-rest.js";
import type { Lab, LabProcess } from "./lab.js";
import {
  EIPBINDING_CRD,
  EIPBINDING_CRD_NAME,
  EIPPOOL_CRD,
  EIPPOOL_CRD_NAME,
  type LabClusterOptions,
  RELAY_SCRIPT,
  VMI_CRD,
  VMI_CRD_NAME,
  VM_CRD,
  VM_CRD_NAME,
} from "./cluster-types.js";
import { LabCluster } from "./lab-cluster.js";

export * from "./cluster-types.js";
export { LabCluster } from "./lab-cluster.js";
export { NODE_NAME_LABEL, type VmiPhase } from "./cluster-objects.js";

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
    await controlPlane.applyManifests([EIPBINDING_CRD, EIPPOOL_CRD, VMI_CRD, VM_CRD]);
    await Promise.all(
      [EIPBINDING_CRD_NAME, EIPPOOL_CRD_NAME, VMI_CRD_NAME, VM_CRD_NAME].map((crd) =>
        controlPlane.waitForCrdEstablished(crd),
      ),
    );
    const t2 = performance.now();
    cluster = new LabCluster(
      lab,
      controlPlane,
      rest,
      relay,
      socketPath,
      unhook,
      () => clustered.delete(lab),
      { namespace, concurrency: options.concurrency ?? 32 },
    );
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
