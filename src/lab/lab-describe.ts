// What the lab tells about itself: its nodes and pod, and the whole of lab.json
// (LabDescription), from which other processes attach to it or remove it.

import { join } from "node:path";
import { NETNS_ETC_DIR, processStartTime } from "./netns.js";
import type { LabProcess } from "./process.js";
import {
  DEVICES,
  MACS,
  type Addressing,
  type IptablesMode,
  type LabNames,
  type LabTopology,
} from "./topology.js";
import {
  STATE_KIND,
  STATE_VERSION,
  type LabDescription,
  type NodeInfo,
  type PodInfo,
  type VmiInfo,
} from "./lab-types.js";

export function nodeInfo(
  addressing: Addressing,
  names: LabNames,
  iptablesModes: readonly IptablesMode[],
  i: number,
): NodeInfo {
  const a = addressing;
  const ns = names.node(i);
  return {
    index: i,
    name: `node${i}`,
    namespace: ns,
    mgmtDevice: DEVICES.nodeMgmt,
    mgmtAddress: a.nodeMgmt(i),
    mgmtCidr: a.cidr(a.nodeMgmt(i), a.mgmtNet),
    gatewayDevice: DEVICES.nodeGateway,
    gatewayMac: MACS.nodeGateway(i),
    bridge: DEVICES.nodeBridge,
    bridgeAddress: a.nodeBridge(i),
    podCidr: a.podCidr(i),
    iptablesMode: iptablesModes[i - 1] ?? "nft",
    etcDir: join(NETNS_ETC_DIR, ns),
  };
}

export function podInfo(
  addressing: Addressing,
  names: LabNames,
  topology: LabTopology,
  podNode: number,
): PodInfo {
  return {
    name: `pod${podNode}`,
    namespace: names.pod(podNode),
    node: podNode,
    address: addressing.podAddress(podNode, topology.podHost),
    mac: MACS.pod(podNode),
  };
}

export interface DescribeInput {
  readonly prefix: string;
  readonly runDir: string;
  readonly topology: LabTopology;
  readonly addressing: Addressing;
  readonly names: LabNames;
  readonly nodes: readonly NodeInfo[];
  readonly pod: PodInfo;
  readonly vmis: readonly VmiInfo[];
  readonly processes: readonly LabProcess[];
  readonly removeOnExit: boolean;
  readonly nextVmiSerial: number;
}

export function describeLab(input: DescribeInput): LabDescription {
  const a = input.addressing;
  const t = input.topology;
  const names = input.names;
  const processes = input.processes
    .filter((p) => p.running())
    .map((p) => ({
      pid: p.pid,
      name: p.name,
      namespace: p.ns,
      argv: p.argv,
      logFile: p.logFile,
    }));
  return {
    kind: STATE_KIND,
    version: STATE_VERSION,
    prefix: input.prefix,
    runDir: input.runDir,
    owner: {
      pid: process.pid,
      startTime: processStartTime(process.pid) ?? "",
      removeOnExit: input.removeOnExit,
    },
    topology: t,
    namespaces: {
      switch: names.switch,
      router: names.router,
      outside: names.outside,
      pod: input.pod.namespace,
      nodes: input.nodes.map((n) => n.namespace),
      vmis: input.vmis.map((v) => v.namespace),
    },
    publicNet: t.publicNet,
    mgmtNet: t.mgmtNet,
    podNet: t.podNet,
    serviceAddress: t.serviceAddress,
    switch: {
      namespace: names.switch,
      publicBridge: DEVICES.publicBridge,
      mgmtBridge: DEVICES.mgmtBridge,
    },
    router: {
      namespace: names.router,
      publicDevice: DEVICES.routerPublic,
      publicAddress: t.routerPublic,
      publicCidr: a.cidr(t.routerPublic, a.publicNet),
      publicMac: MACS.routerPublic,
      mgmtDevice: DEVICES.routerMgmt,
      mgmtAddress: t.routerMgmt,
      mgmtCidr: a.cidr(t.routerMgmt, a.mgmtNet),
      extDevice: DEVICES.routerExt,
      extAddress: t.routerExt,
      extCidr: a.cidr(t.routerExt, a.extNet),
    },
    outside: {
      namespace: names.outside,
      device: DEVICES.guest,
      address: t.outside,
      cidr: a.cidr(t.outside, a.extNet),
      gateway: t.routerExt,
    },
    nodes: input.nodes,
    pod: input.pod,
    vmis: input.vmis,
    processes,
    pids: processes.map((p) => p.pid),
    nextVmiSerial: input.nextVmiSerial,
  };
}
