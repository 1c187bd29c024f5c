// The lab's types: its options, what it tells about its nodes, pod, VMIs and processes, and
// lab.json (LabDescription), which other processes read to find and remove a lab.

import { fileURLToPath } from "node:url";
import type { CommandRunner } from "../kernel/runner.js";
import type { IptablesMode, LabTopology } from "./topology.js";

/** Where run directories live: `/tmp/<prefix>/`. */
export const DEFAULT_RUN_ROOT = "/tmp";
export const DEFAULT_PREFIX_BASE = "keip-";
export const STATE_FILE = "lab.json";
export const STATE_KIND = "kube-eip-lab";
export const STATE_VERSION = 1;

/** The who-are-you server and UDP client (compiled next to this file). */
export const WHOAMI_SCRIPT = fileURLToPath(new URL("./whoami.js", import.meta.url));

export type IptablesModeOption = IptablesMode | "mixed" | readonly IptablesMode[];

export interface LabOptions {
  /** Number of nodes, default 2. */
  readonly nodes?: number;
  /** Prefix of every name, default `keip-<6 hex>`. */
  readonly prefix?: string;
  /**
   * iptables backend of the nodes: one for all (default "nft"), "mixed" (odd nodes legacy,
   * even nodes nft), or one per node.
   */
  readonly iptablesModes?: IptablesModeOption;
  /** Addressing overrides; the default is SEED_TOPOLOGY. */
  readonly topology?: Partial<LabTopology>;
  readonly runner?: CommandRunner;
  /** Parent of the run directory, default /tmp. */
  readonly runRoot?: string;
  /** Install exit and signal handlers before building (so a crash during up cleans up too). */
  readonly removeOnExit?: boolean;
  /** Keep the run directory (logs, state) on down. */
  readonly keepRunDir?: boolean;
}

export interface NodeInfo {
  /** 1-based. */
  readonly index: number;
  readonly name: string;
  readonly namespace: string;
  readonly mgmtDevice: string;
  readonly mgmtAddress: string;
  readonly mgmtCidr: string;
  /** The gateway device on the public segment (no address of its own). */
  readonly gatewayDevice: string;
  readonly gatewayMac: string;
  readonly bridge: string;
  readonly bridgeAddress: string;
  readonly podCidr: string;
  readonly iptablesMode: IptablesMode;
  /** `/etc/netns/<namespace>`: bind-mounted over /etc by `ip netns exec` (has iproute2/). */
  readonly etcDir: string;
}

export interface PodInfo {
  readonly name: string;
  readonly namespace: string;
  readonly node: number;
  readonly address: string;
  readonly mac: string;
}

export interface VmiInfo {
  readonly name: string;
  readonly namespace: string;
  readonly node: number;
  readonly nodeNamespace: string;
  readonly address: string;
  /** Stays the same across moves, like a migrated VM's. */
  readonly mac: string;
  /** The veth end in the node namespace, plugged into cni0. */
  readonly hostVeth: string;
  readonly serial: number;
}

export interface ProcessInfo {
  readonly pid: number;
  readonly name: string;
  readonly namespace: string;
  readonly argv: readonly string[];
  readonly logFile: string;
}

/**
 * The process that built the lab. With removeOnExit it removes the lab when it exits (a test
 * run, the demo), so such a lab whose owner is gone is a leftover; a lab kept on purpose
 * (`kube-eip-lab up`) has removeOnExit false.
 */
export interface LabOwner {
  readonly pid: number;
  /** The process's start time (see processStartTime), against PID reuse. */
  readonly startTime: string;
  readonly removeOnExit: boolean;
}

export interface LabDescription {
  readonly kind: typeof STATE_KIND;
  readonly version: typeof STATE_VERSION;
  readonly prefix: string;
  readonly runDir: string;
  readonly owner?: LabOwner;
  readonly topology: LabTopology;
  readonly namespaces: {
    readonly switch: string;
    readonly router: string;
    readonly outside: string;
    readonly pod: string;
    readonly nodes: readonly string[];
    readonly vmis: readonly string[];
  };
  readonly publicNet: string;
  readonly mgmtNet: string;
  readonly podNet: string;
  readonly serviceAddress: string;
  readonly switch: {
    readonly namespace: string;
    readonly publicBridge: string;
    readonly mgmtBridge: string;
  };
  readonly router: {
    readonly namespace: string;
    readonly publicDevice: string;
    readonly publicAddress: string;
    readonly publicCidr: string;
    readonly publicMac: string;
    readonly mgmtDevice: string;
    readonly mgmtAddress: string;
    readonly mgmtCidr: string;
    readonly extDevice: string;
    readonly extAddress: string;
    readonly extCidr: string;
  };
  readonly outside: {
    readonly namespace: string;
    readonly device: string;
    readonly address: string;
    readonly cidr: string;
    readonly gateway: string;
  };
  readonly nodes: readonly NodeInfo[];
  readonly pod: PodInfo;
  readonly vmis: readonly VmiInfo[];
  readonly processes: readonly ProcessInfo[];
  readonly pids: readonly number[];
  /** Next VMI serial (MAC addresses); kept so an attached lab continues the sequence. */
  readonly nextVmiSerial: number;
}

export interface ExecOptions {
  readonly input?: string;
}

export interface SpawnOptions {
  /** Log file name (without .log) and process name; default from argv[0]. */
  readonly name?: string;
  /** Added to the environment. */
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Wait until the output contains this before resolving. */
  readonly waitFor?: RegExp | string;
  /** For waitFor, default 10 s. */
  readonly timeoutMs?: number;
}

export interface PingOptions {
  /** Echo requests to send, default 1. */
  readonly count?: number;
  /** Seconds to wait for each reply, default 1. */
  readonly timeoutSec?: number;
  /** Seconds between requests, default 0.1. */
  readonly intervalSec?: number;
}

export interface PingResult {
  readonly sent: number;
  readonly received: number;
  /** 0..1 */
  readonly loss: number;
  /** At least one reply. */
  readonly replied: boolean;
}

export interface DownOptions {
  readonly keepRunDir?: boolean;
}

export interface VmiRecord {
  name: string;
  node: number;
  address: string;
  serial: number;
}

export interface LabConfig {
  readonly prefix: string;
  readonly nodes: number;
  readonly iptablesModes: readonly IptablesMode[];
  readonly topology: LabTopology;
  readonly runner: CommandRunner;
  readonly runDir: string;
  readonly keepRunDir: boolean;
}

export interface CleanupReport {
  readonly namespaces: readonly string[];
  readonly etcDirs: readonly string[];
  readonly runDirs: readonly string[];
}
