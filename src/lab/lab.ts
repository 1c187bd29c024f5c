// The lab: a whole kube-eip site in network namespaces on this host, for tests, the demo
// and benchmarks. A switch namespace holds the public segment and the management network
// as bridges; a router is the EIP gateway and leads to an outside host; nodes have a
// management address, a gateway device on the public segment without an address, a cni0
// bridge with their pod /24, routes to the other nodes' pods, FORWARD policy DROP and a
// kube-proxy-like service DNAT; one pod lives on node 2; VMIs are added, moved and removed.
//
// The host's own network namespace is never touched: every link is created inside a lab
// namespace, every sysctl is set through `ip netns exec`. All names carry a per-run prefix
// and `down()` (or the exit handlers of `removeOnExit()`) removes everything.

import { randomBytes } from "node:crypto";
import { cp, mkdir, rm, writeFile } from "node:fs/promises";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CommandError, ExecRunner, type CommandRunner, type RunResult } from "../kernel/runner.js";
import { isIpv4 } from "../common/ipv4.js";
import {
  etcNetnsWithPrefix,
  listNamespaces,
  NETNS_ETC_DIR,
  processAlive,
  processStartTime,
  removeNamespaces,
  removeNamespacesSync,
} from "./netns.js";
import { spawnTracked, type LabProcess } from "./process.js";
import {
  Addressing,
  buildPlan,
  checkPrefix,
  checkVmiName,
  DEVICES,
  guestLines,
  MACS,
  namespaceNames,
  plugVmiLine,
  podNodeIndex,
  SEED_TOPOLOGY,
  vmiHostVeth,
  type IptablesMode,
  type LabNames,
  type LabTopology,
} from "./topology.js";

export { SEED_TOPOLOGY, type IptablesMode, type LabNames, type LabTopology } from "./topology.js";
export type { LabProcess, ProcessExit } from "./process.js";

/** Where run directories live: `/tmp/<prefix>/`. */
export const DEFAULT_RUN_ROOT = "/tmp";
export const DEFAULT_PREFIX_BASE = "keip-";
export const STATE_FILE = "lab.json";
const STATE_KIND = "kube-eip-lab";
const STATE_VERSION = 1;

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

interface VmiRecord {
  name: string;
  node: number;
  address: string;
  serial: number;
}

interface LabConfig {
  readonly prefix: string;
  readonly nodes: number;
  readonly iptablesModes: readonly IptablesMode[];
  readonly topology: LabTopology;
  readonly runner: CommandRunner;
  readonly runDir: string;
  readonly keepRunDir: boolean;
}

export function defaultPrefix(): string {
  return `${DEFAULT_PREFIX_BASE}${randomBytes(3).toString("hex")}`;
}

export function resolveIptablesModes(
  option: IptablesModeOption | undefined,
  nodes: number,
): IptablesMode[] {
  const list = Array.from({ length: nodes }, (_, k) => k + 1);
  if (option === undefined) return list.map(() => "nft");
  if (option === "mixed") return list.map((i) => (i % 2 === 1 ? "legacy" : "nft"));
  if (option === "legacy" || option === "nft") return list.map(() => option);
  if (Array.isArray(option)) {
    const modes = option as readonly string[];
    if (modes.length !== nodes || !modes.every((m) => m === "legacy" || m === "nft")) {
      throw new Error(`iptablesModes: need ${nodes} entries of "legacy" or "nft"`);
    }
    return [...(modes as readonly IptablesMode[])];
  }
  throw new Error(`iptablesModes: ${JSON.stringify(option)} is not legacy, nft or mixed`);
}

/** Turns a failed `ip -batch` into an error naming the line that failed. */
function batchError(err: unknown, ns: string, lines: readonly string[]): Error {
  if (!(err instanceof CommandError)) return err instanceof Error ? err : new Error(String(err));
  const match = /Command failed -:(\d+)/.exec(err.stderr);
  const line = match ? lines[Number(match[1]) - 1] : undefined;
  const where = line === undefined ? "" : ` at "${line}"`;
  return new Error(`ip -n ${ns} -batch failed${where}: ${err.stderr.trim()}`, { cause: err });
}

/**
 * Like Promise.all, but waits for every promise to settle before rejecting with the first
 * failure, so nothing is still running when the caller starts tearing down.
 */
async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** Where iproute2 keeps rt_tables: /etc (Debian, older releases) or /usr (newer defaults). */
const IPROUTE2_DIRS = ["/etc/iproute2", "/usr/share/iproute2", "/usr/lib/iproute2"];
const DEFAULT_RT_TABLES = "255\tlocal\n254\tmain\n253\tdefault\n0\tunspec\n";

/** A namespace's own copy of the iproute2 configuration, for `ip netns exec` to bind-mount. */
async function makeNetnsIproute2(target: string): Promise<void> {
  const source = IPROUTE2_DIRS.find((dir) => existsSync(join(dir, "rt_tables")));
  if (source) {
    await cp(source, target, { recursive: true });
  } else {
    await mkdir(target, { recursive: true });
    await writeFile(join(target, "rt_tables"), DEFAULT_RT_TABLES);
  }
}

// ---- exit handling: one set of handlers for all labs that asked for it ----

const exitLabs = new Set<Lab>();
let handling = false;
const SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
const SIGNAL_NUMBERS: Readonly<Record<string, number>> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

function onExit(): void {
  for (const lab of exitLabs) lab.downSync();
  exitLabs.clear();
}

function onSignal(sig: NodeJS.Signals): void {
  if (handling) {
    // A second signal: give up waiting, clean up synchronously and go.
    onExit();
    process.exit(128 + (SIGNAL_NUMBERS[sig] ?? 15));
  }
  handling = true;
  void Promise.allSettled([...exitLabs].map((lab) => lab.down())).then(() =>
    process.exit(128 + (SIGNAL_NUMBERS[sig] ?? 15)),
  );
}

function registerExit(lab: Lab): void {
  if (exitLabs.size === 0) {
    process.on("exit", onExit);
    for (const sig of SIGNALS) process.on(sig, onSignal);
  }
  exitLabs.add(lab);
}

function unregisterExit(lab: Lab): void {
  if (!exitLabs.delete(lab) || exitLabs.size > 0 || handling) return;
  process.off("exit", onExit);
  for (const sig of SIGNALS) process.off(sig, onSignal);
}

export class Lab {
  readonly prefix: string;
  readonly runDir: string;
  readonly logDir: string;
  readonly nodeCount: number;
  readonly topology: LabTopology;
  readonly addressing: Addressing;
  readonly iptablesModes: readonly IptablesMode[];
  readonly names: LabNames;
  readonly podNode: number;
  private readonly runner: CommandRunner;
  private readonly keepRunDir: boolean;
  private readonly vmis = new Map<string, VmiRecord>();
  private readonly processes = new Set<LabProcess & { killNow(): void }>();
  private readonly processNames = new Set<string>();
  /** Namespaces this object created or adopted: the only ones it ever deletes. */
  private readonly owned = new Set<string>();
  private readonly downHooks: (() => Promise<void> | void)[] = [];
  private nextSerial = 1;
  private isDown = false;
  /** Whether this process removes the lab when it exits (recorded in lab.json's owner). */
  private removedOnExit = false;
  private downing: Promise<void> | undefined;

  private constructor(config: LabConfig) {
    this.prefix = config.prefix;
    this.nodeCount = config.nodes;
    this.topology = config.topology;
    this.addressing = new Addressing(config.topology);
    this.iptablesModes = config.iptablesModes;
    this.runner = config.runner;
    this.runDir = config.runDir;
    this.logDir = join(config.runDir, "logs");
    this.keepRunDir = config.keepRunDir;
    this.names = namespaceNames(config.prefix);
    this.podNode = podNodeIndex(config.nodes);
  }

  /** Builds a lab. On failure everything created so far is removed and the error rethrown. */
  static async up(options: LabOptions = {}): Promise<Lab> {
    const prefix = checkPrefix(options.prefix ?? defaultPrefix());
    const nodes = options.nodes ?? 2;
    const topology: LabTopology = { ...SEED_TOPOLOGY, ...options.topology };
    const addressing = new Addressing(topology);
    if (!Number.isInteger(nodes) || nodes < 1 || nodes > addressing.maxNodes()) {
      throw new Error(`nodes must be an integer from 1 to ${addressing.maxNodes()}`);
    }
    const lab = new Lab({
      prefix,
      nodes,
      iptablesModes: resolveIptablesModes(options.iptablesModes, nodes),
      topology,
      runner: options.runner ?? new ExecRunner(),
      runDir: join(options.runRoot ?? DEFAULT_RUN_ROOT, prefix),
      keepRunDir: options.keepRunDir ?? false,
    });
    // Refuse a prefix in use before creating anything: never adopt someone else's names.
    const plan = buildPlan({ prefix, nodes, iptablesModes: lab.iptablesModes, topology });
    const existing = new Set(listNamespaces());
    const clash = plan.namespaces.filter((ns) => existing.has(ns));
    if (clash.length > 0) {
      throw new Error(`namespaces already exist: ${clash.join(", ")} (prefix ${prefix} in use)`);
    }
    try {
      await mkdir(options.runRoot ?? DEFAULT_RUN_ROOT, { recursive: true });
      await mkdir(lab.runDir); // fails if it exists: the run directory is the prefix's lock
    } catch (err) {
      throw new Error(
        `cannot create run directory ${lab.runDir} (prefix ${prefix} in use? try cleanup): ${String(err)}`,
      );
    }
    if (options.removeOnExit) lab.removeOnExit();
    try {
      await lab.build(plan);
    } catch (err) {
      await lab.down().catch(() => {});
      throw err;
    }
    return lab;
  }

  /** Takes over a lab another process built (from its lab.json), e.g. to add VMIs or down it. */
  static async attach(
    prefix: string,
    options: { runner?: CommandRunner; runRoot?: string; keepRunDir?: boolean } = {},
  ): Promise<Lab> {
    checkPrefix(prefix);
    const runDir = join(options.runRoot ?? DEFAULT_RUN_ROOT, prefix);
    const state = readStateFile(join(runDir, STATE_FILE));
    if (!state || state.prefix !== prefix) {
      throw new Error(`no lab state in ${join(runDir, STATE_FILE)}`);
    }
    const lab = new Lab({
      prefix,
      nodes: state.nodes.length,
      iptablesModes: state.nodes.map((n) => n.iptablesMode),
      topology: state.topology,
      runner: options.runner ?? new ExecRunner(),
      runDir,
      keepRunDir: options.keepRunDir ?? false,
    });
    for (const ns of lab.infraNamespaces()) lab.owned.add(ns);
    for (const v of state.vmis) {
      lab.vmis.set(v.name, { name: v.name, node: v.node, address: v.address, serial: v.serial });
      lab.owned.add(lab.names.vmi(v.name));
    }
    lab.nextSerial = state.nextVmiSerial;
    mkdirSync(lab.logDir, { recursive: true });
    return lab;
  }

  private infraNamespaces(): string[] {
    const nodes = Array.from({ length: this.nodeCount }, (_, k) => this.names.node(k + 1));
    return [
      this.names.switch,
      this.names.router,
      this.names.outside,
      ...nodes,
      this.names.pod(this.podNode),
    ];
  }

  private async build(plan: ReturnType<typeof buildPlan>): Promise<void> {
    await mkdir(this.logDir, { recursive: true });
    for (const ns of plan.namespaces) this.owned.add(ns);
    const nodes = Array.from({ length: this.nodeCount }, (_, k) => k + 1);
    await settleAll<unknown>([
      this.runner.run("ip", ["-batch", "-"], {
        input: plan.namespaces.map((ns) => `netns add ${ns}\n`).join(""),
      }),
      // Each node gets its own /etc/iproute2 (rt_tables) under `ip netns exec`.
      ...nodes.map((i) => makeNetnsIproute2(join(NETNS_ETC_DIR, this.names.node(i), "iproute2"))),
    ]);
    // Sysctls before any link exists, so the namespaces' defaults apply to every link.
    await settleAll(
      [...plan.sysctls].map(([ns, settings]) =>
        this.runner.run("ip", ["netns", "exec", ns, "sysctl", "-q", "-e", "-w", ...settings]),
      ),
    );
    // iptables does not depend on links: it runs alongside the link phases.
    const iptables = settleAll(
      plan.iptables.map(({ ns, mode, input }) =>
        this.runner.run("ip", ["netns", "exec", ns, `iptables-${mode}-restore`, "-w", "5"], {
          input,
        }),
      ),
    );
    // Handles a rejection now (no unhandled-rejection report); `await iptables` rethrows it.
    const iptablesSettled = iptables.then(
      () => undefined,
      () => undefined,
    );
    try {
      for (const phase of plan.phases) {
        await settleAll(phase.map(({ ns, lines }) => this.ipBatch(ns, lines)));
      }
    } finally {
      // Never leave a command running behind a failure: teardown follows.
      await iptablesSettled;
    }
    await iptables;
    this.saveState({ strict: true });
  }

  private async ipBatch(ns: string, lines: readonly string[]): Promise<void> {
    try {
      await this.runner.run("ip", ["-n", ns, "-batch", "-"], { input: lines.join("\n") + "\n" });
    } catch (err) {
      throw batchError(err, ns, lines);
    }
  }

  // ---- names and addresses ----

  nodeNamespace(i: number): string {
    this.checkNode(i);
    return this.names.node(i);
  }

  vmiNamespace(name: string): string {
    return this.names.vmi(this.vmiRecord(name).name);
  }

  private checkNode(i: number): void {
    if (!Number.isInteger(i) || i < 1 || i > this.nodeCount) {
      throw new Error(`node index ${i} out of range 1..${this.nodeCount}`);
    }
  }

  /** All namespaces of this lab (infrastructure and VMIs). */
  namespaces(): string[] {
    return [...this.infraNamespaces(), ...[...this.vmis.keys()].map(this.names.vmi)];
  }

  private checkOwnNamespace(ns: string): void {
    if (!this.namespaces().includes(ns)) {
      throw new Error(`${ns} is not a namespace of lab ${this.prefix}`);
    }
  }

  node(i: number): NodeInfo {
    this.checkNode(i);
    const a = this.addressing;
    const ns = this.names.node(i);
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
      iptablesMode: this.iptablesModes[i - 1] ?? "nft",
      etcDir: join(NETNS_ETC_DIR, ns),
    };
  }

  pod(): PodInfo {
    return {
      name: `pod${this.podNode}`,
      namespace: this.names.pod(this.podNode),
      node: this.podNode,
      address: this.addressing.podAddress(this.podNode, this.topology.podHost),
      mac: MACS.pod(this.podNode),
    };
  }

  private vmiRecord(name: string): VmiRecord {
    const rec = this.vmis.get(name);
    if (!rec) throw new Error(`no VMI ${JSON.stringify(name)} in lab ${this.prefix}`);
    return rec;
  }

  vmi(name: string): VmiInfo {
    return this.vmiInfo(this.vmiRecord(name));
  }

  listVmis(): VmiInfo[] {
    return [...this.vmis.values()].map((rec) => this.vmiInfo(rec));
  }

  private vmiInfo(rec: VmiRecord): VmiInfo {
    return {
      name: rec.name,
      namespace: this.names.vmi(rec.name),
      node: rec.node,
      nodeNamespace: this.names.node(rec.node),
      address: rec.address,
      mac: MACS.vmi(rec.serial),
      hostVeth: vmiHostVeth(rec.name),
      serial: rec.serial,
    };
  }

  describe(): LabDescription {
    const a = this.addressing;
    const t = this.topology;
    const nodes = Array.from({ length: this.nodeCount }, (_, k) => this.node(k + 1));
    const processes = [...this.processes]
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
      prefix: this.prefix,
      runDir: this.runDir,
      owner: {
        pid: process.pid,
        startTime: processStartTime(process.pid) ?? "",
        removeOnExit: this.removedOnExit,
      },
      topology: t,
      namespaces: {
        switch: this.names.switch,
        router: this.names.router,
        outside: this.names.outside,
        pod: this.names.pod(this.podNode),
        nodes: nodes.map((n) => n.namespace),
        vmis: [...this.vmis.keys()].map(this.names.vmi),
      },
      publicNet: t.publicNet,
      mgmtNet: t.mgmtNet,
      podNet: t.podNet,
      serviceAddress: t.serviceAddress,
      switch: {
        namespace: this.names.switch,
        publicBridge: DEVICES.publicBridge,
        mgmtBridge: DEVICES.mgmtBridge,
      },
      router: {
        namespace: this.names.router,
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
        namespace: this.names.outside,
        device: DEVICES.guest,
        address: t.outside,
        cidr: a.cidr(t.outside, a.extNet),
        gateway: t.routerExt,
      },
      nodes,
      pod: this.pod(),
      vmis: this.listVmis(),
      processes,
      pids: processes.map((p) => p.pid),
      nextVmiSerial: this.nextSerial,
    };
  }

  /** Writes lab.json (atomically), so `kube-eip-lab down/status` and attach() find the lab. */
  private saveState(options: { strict?: boolean } = {}): void {
    if (this.isDown || this.downing) return;
    const file = join(this.runDir, STATE_FILE);
    const tmp = `${file}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify(this.describe(), null, 2) + "\n");
      renameSync(tmp, file);
    } catch (err) {
      // After up, the state file is a convenience for other processes; never crash over it
      // (e.g. when `cleanup` from elsewhere has removed the run directory).
      if (options.strict) throw err;
    }
  }

  /** A directory under the run directory, created if needed (e.g. an agent's state dir). */
  stateDir(name: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new Error(`bad state dir name ${name}`);
    const dir = join(this.runDir, "state", name);
    mkdirSync(dir, { recursive: true });
    return dir;
  }

  // ---- running things ----

  /** Runs a command in one of the lab's namespaces; rejects with CommandError on failure. */
  async exec(ns: string, argv: readonly string[], options: ExecOptions = {}): Promise<RunResult> {
    this.checkUp();
    this.checkOwnNamespace(ns);
    const [command, ...args] = argv;
    if (command === undefined) throw new Error("exec: empty argv");
    return this.runner.run("ip", ["netns", "exec", ns, command, ...args], options);
  }

  nodeExec(i: number, argv: readonly string[], options: ExecOptions = {}): Promise<RunResult> {
    return this.exec(this.nodeNamespace(i), argv, options);
  }

  /**
   * Starts a long-running process in a lab namespace; stdout and stderr go to
   * `<runDir>/logs/<name>.log`. It is stopped on down(), removeVmi() of its namespace, or
   * by its own stop().
   */
  async spawnIn(
    ns: string,
    argv: readonly string[],
    options: SpawnOptions = {},
  ): Promise<LabProcess> {
    this.checkUp();
    this.checkOwnNamespace(ns);
    if (argv.length === 0) throw new Error("spawnIn: empty argv");
    const base = (options.name ?? basename(argv[0] ?? "proc")).replace(/[^A-Za-z0-9._-]/g, "_");
    let name = base;
    for (let k = 2; this.processNames.has(name); k++) name = `${base}-${k}`;
    this.processNames.add(name);
    const proc = spawnTracked({
      name,
      ns,
      argv,
      logFile: join(this.logDir, `${name}.log`),
      env: options.env,
      cwd: options.cwd,
    });
    this.processes.add(proc);
    void proc.exited.then(() => {
      this.processes.delete(proc);
      this.saveState();
    });
    this.saveState();
    if (options.waitFor !== undefined) {
      try {
        await proc.waitFor(options.waitFor, options.timeoutMs);
      } catch (err) {
        await proc.stop(500);
        throw err;
      }
    }
    return proc;
  }

  /** Processes started with spawnIn that are still running. */
  runningProcesses(): LabProcess[] {
    return [...this.processes].filter((p) => p.running());
  }

  // ---- VMIs ----

  private usedAddresses(node: number): Set<string> {
    const used = new Set<string>([this.addressing.nodeBridge(node)]);
    if (node === this.podNode) used.add(this.pod().address);
    for (const rec of this.vmis.values()) if (rec.node === node) used.add(rec.address);
    return used;
  }

  private pickAddress(node: number, requested: string | undefined): string {
    const used = this.usedAddresses(node);
    if (requested !== undefined) {
      if (
        !isIpv4(requested) ||
        this.addressing.nodeOfPodAddress(requested, this.nodeCount) !== node
      ) {
        throw new Error(
          `${requested} is not an address in node ${node}'s ${this.addressing.podCidr(node)}`,
        );
      }
      const host = Number(requested.split(".")[3]);
      if (host === 0 || host === 255 || used.has(requested)) {
        throw new Error(`${requested} is not free on node ${node}`);
      }
      return requested;
    }
    for (let host = this.topology.firstVmiHost; host < 255; host++) {
      const address = this.addressing.podAddress(node, host);
      if (!used.has(address)) return address;
    }
    throw new Error(`no free VMI address left on node ${node}`);
  }

  /**
   * Creates namespace `<prefix>-vmi-<name>` with eth0 plugged into node `node`'s cni0
   * (1-based), with the given address or the next free one from .10 up.
   */
  async addVmi(name: string, node: number, address?: string): Promise<VmiInfo> {
    this.checkUp();
    checkVmiName(name);
    this.checkNode(node);
    if (this.vmis.has(name)) throw new Error(`VMI ${name} exists`);
    const ns = this.names.vmi(name);
    if (listNamespaces().includes(ns)) throw new Error(`namespace ${ns} already exists`);
    const rec: VmiRecord = {
      name,
      node,
      address: this.pickAddress(node, address),
      serial: this.nextSerial++,
    };
    this.vmis.set(name, rec); // reserves the name and address before anything is awaited
    this.owned.add(ns);
    try {
      await this.runner.run("ip", ["netns", "add", ns]);
      await this.ipBatch(this.names.node(node), [plugVmiLine(name, rec.serial, ns)]);
      await this.ipBatch(ns, guestLines(rec.address, this.addressing.nodeBridge(node)));
    } catch (err) {
      this.vmis.delete(name);
      await removeNamespaces(this.runner, [ns]).catch(() => {});
      this.owned.delete(ns);
      throw err;
    }
    this.saveState();
    return this.vmiInfo(rec);
  }

  /**
   * Re-plugs a VMI into another node's cni0 (a new veth; the namespace and the processes in
   * it stay). Its address becomes `newAddress` or the next free one on the new node.
   * Resolves to the new address.
   */
  async moveVmi(name: string, toNode: number, newAddress?: string): Promise<string> {
    this.checkUp();
    const rec = this.vmiRecord(name);
    this.checkNode(toNode);
    if (rec.node === toNode) throw new Error(`VMI ${name} is already on node ${toNode}`);
    const address = this.pickAddress(toNode, newAddress);
    rec.node = toNode;
    rec.address = address;
    const ns = this.names.vmi(name);
    await this.ipBatch(ns, [`link del ${DEVICES.guest}`]);
    await this.ipBatch(this.names.node(toNode), [plugVmiLine(name, rec.serial, ns)]);
    await this.ipBatch(ns, guestLines(address, this.addressing.nodeBridge(toNode)));
    // As QEMU does after a migration, the guest announces itself, so the new node's
    // neighbour entry for a reused address does not keep the previous guest's MAC. In the
    // background: arping waits a second after sending.
    void this.runner
      .run("ip", ["netns", "exec", ns, "arping", "-U", "-c", "1", "-I", DEVICES.guest, address])
      .catch(() => {});
    this.saveState();
    return address;
  }

  /** Stops the VMI's processes and deletes its namespace. */
  async removeVmi(name: string): Promise<void> {
    this.checkUp();
    this.vmiRecord(name);
    const ns = this.names.vmi(name);
    await Promise.all([...this.processes].filter((p) => p.ns === ns).map((p) => p.stop()));
    await removeNamespaces(this.runner, [ns]);
    this.vmis.delete(name);
    this.owned.delete(ns);
    this.saveState();
  }

  // ---- traffic ----

  /** Pings from a lab namespace. Never rejects for lost packets or unreachable networks. */
  async ping(fromNs: string, address: string, options: PingOptions = {}): Promise<PingResult> {
    const count = options.count ?? 1;
    const args = ["ping", "-n", "-q", "-c", String(count), "-W", String(options.timeoutSec ?? 1)];
    if (count > 1) args.push("-i", String(options.intervalSec ?? 0.1));
    args.push(address);
    try {
      const { stdout } = await this.exec(fromNs, args);
      const match = /(\d+) packets transmitted, (\d+) received/.exec(stdout);
      const sent = match ? Number(match[1]) : count;
      const received = match ? Number(match[2]) : 0;
      return { sent, received, loss: sent === 0 ? 1 : 1 - received / sent, replied: received > 0 };
    } catch (err) {
      // Exit 1: no reply at all. Exit 2 with "unreachable": no route from here.
      if (
        err instanceof CommandError &&
        (err.exitCode === 1 || (err.exitCode === 2 && /unreachable/i.test(err.stderr)))
      ) {
        return { sent: count, received: 0, loss: 1, replied: false };
      }
      throw err;
    }
  }

  /**
   * Asks who has `address` with broadcast ARP requests (iputils arping) from a device of a
   * lab namespace, for `timeoutSec` (default 1) seconds; `source` is the sender address
   * (needed for targets the namespace has no route to). Resolves to the MAC addresses that
   * answered, lowercase, each once, in order; [] when nothing answered.
   */
  async arping(
    fromNs: string,
    device: string,
    address: string,
    options: { source: string; timeoutSec?: number },
  ): Promise<string[]> {
    const timeout = String(options.timeoutSec ?? 1);
    const args = ["arping", "-b", "-w", timeout, "-I", device, "-s", options.source, address];
    try {
      const { stdout } = await this.exec(fromNs, args);
      const macs = [...stdout.matchAll(/reply from \S+ \[([0-9A-Fa-f:]{17})\]/g)];
      return [...new Set(macs.map((m) => (m[1] ?? "").toLowerCase()))];
    } catch (err) {
      // Exit 1: nothing answered.
      if (err instanceof CommandError && err.exitCode === 1) return [];
      throw err;
    }
  }

  /** Starts the who-are-you server (TCP and UDP) on 0.0.0.0:port in a lab namespace. */
  startTcpServer(ns: string, port: number, options: { name?: string } = {}): Promise<LabProcess> {
    return this.spawnIn(ns, [process.execPath, WHOAMI_SCRIPT, "serve", String(port)], {
      name: options.name ?? `whoami-${ns.slice(this.prefix.length + 1)}-${port}`,
      waitFor: "LISTENING",
      timeoutMs: 10_000,
    });
  }

  /**
   * Connects from a lab namespace and returns what the server answered (the who-are-you
   * server: the source address it saw). Rejects when nothing answers.
   */
  async tcpRequest(
    fromNs: string,
    address: string,
    port: number,
    options: { timeoutSec?: number } = {},
  ): Promise<string> {
    const timeout = String(options.timeoutSec ?? 2);
    let stdout: string;
    try {
      ({ stdout } = await this.exec(fromNs, ["nc", "-n", "-w", timeout, address, String(port)]));
    } catch (err) {
      const detail = err instanceof CommandError ? err.stderr.trim() : String(err);
      throw new Error(
        `tcp ${fromNs} -> ${address}:${port}: no answer (refused, unreachable or timed out)${detail ? `: ${detail}` : ""}`,
        { cause: err },
      );
    }
    const answer = stdout.trim();
    if (answer === "") throw new Error(`tcp ${fromNs} -> ${address}:${port}: empty answer`);
    return answer;
  }

  /** The UDP equivalent of tcpRequest (the who-are-you server answers UDP as well). */
  async udpRequest(
    fromNs: string,
    address: string,
    port: number,
    options: { timeoutMs?: number } = {},
  ): Promise<string> {
    const timeout = String(options.timeoutMs ?? 2000);
    try {
      const { stdout } = await this.exec(fromNs, [
        process.execPath,
        WHOAMI_SCRIPT,
        "udp",
        address,
        String(port),
        timeout,
      ]);
      return stdout.trim();
    } catch (err) {
      const detail = err instanceof CommandError ? err.stderr.trim() : String(err);
      throw new Error(`udp ${fromNs} -> ${address}:${port}: ${detail}`, { cause: err });
    }
  }

  // ---- teardown ----

  private checkUp(): void {
    if (this.isDown || this.downing) throw new Error(`lab ${this.prefix} is down`);
  }

  /** False once down() has begun. */
  get active(): boolean {
    return !this.isDown && this.downing === undefined;
  }

  /**
   * Removes the lab on process exit and on SIGINT/SIGTERM/SIGHUP (then exits with 128+n).
   * Returns a function that uninstalls the handlers; down() uninstalls them as well.
   */
  removeOnExit(): () => void {
    if (!this.isDown) registerExit(this);
    this.removedOnExit = true;
    this.saveState();
    return () => {
      unregisterExit(this);
      this.removedOnExit = false;
      this.saveState();
    };
  }

  /**
   * Runs `fn` at the start of down(), before the lab stops its processes and removes its
   * namespaces: for what lives in the lab and must stop in order (a control plane in the
   * router namespace, say). Hooks run one at a time, the last registered first; a hook that
   * fails does not stop the teardown, and down() rejects with its error once the lab is
   * gone. downSync() (the process 'exit' handler) runs no hook: it kills every process in
   * the lab's namespaces. Returns a function that unregisters the hook.
   */
  onDown(fn: () => Promise<void> | void): () => void {
    this.checkUp();
    this.downHooks.push(fn);
    return () => {
      const at = this.downHooks.indexOf(fn);
      if (at >= 0) this.downHooks.splice(at, 1);
    };
  }

  /** Stops every process the lab started and removes all its namespaces and files. */
  down(options: DownOptions = {}): Promise<void> {
    this.downing ??= this.teardown(options).finally(() => {
      this.isDown = true;
      unregisterExit(this);
    });
    return this.downing;
  }

  private async teardown(options: DownOptions): Promise<void> {
    const hookErrors: unknown[] = [];
    for (const hook of this.downHooks.splice(0).reverse()) {
      try {
        await hook();
      } catch (err) {
        hookErrors.push(err);
      }
    }
    await Promise.all([...this.processes].map((p) => p.stop(2000)));
    await removeNamespaces(this.runner, [...this.owned]);
    for (const i of Array.from({ length: this.nodeCount }, (_, k) => k + 1)) {
      await rm(join(NETNS_ETC_DIR, this.names.node(i)), { recursive: true, force: true });
    }
    if (!(options.keepRunDir ?? this.keepRunDir)) {
      await rm(this.runDir, { recursive: true, force: true });
    }
    if (hookErrors.length > 0) throw hookErrors[0];
  }

  /** down(), synchronously and forcefully: for the process 'exit' handler only. */
  downSync(): void {
    if (this.isDown) return;
    this.isDown = true;
    for (const p of this.processes) p.killNow();
    removeNamespacesSync([...this.owned]);
    for (let i = 1; i <= this.nodeCount; i++) {
      rmSync(join(NETNS_ETC_DIR, this.names.node(i)), { recursive: true, force: true });
    }
    if (!this.keepRunDir) rmSync(this.runDir, { recursive: true, force: true });
  }
}

// ---- labs of other processes: state files and leftovers ----

interface StateFileVmi {
  readonly name: string;
  readonly node: number;
  readonly address: string;
  readonly serial: number;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Reads and minimally validates a lab.json; undefined if it is missing or not a lab's. */
export function readStateFile(file: string): LabDescription | undefined {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
  if (!isRecord(data) || data.kind !== STATE_KIND || data.version !== STATE_VERSION)
    return undefined;
  if (typeof data.prefix !== "string" || !Array.isArray(data.nodes) || !Array.isArray(data.vmis)) {
    return undefined;
  }
  if (!isRecord(data.topology) || typeof data.nextVmiSerial !== "number") return undefined;
  for (const v of data.vmis as unknown[]) {
    const vmi = v as Partial<StateFileVmi>;
    if (typeof vmi.name !== "string" || typeof vmi.node !== "number") return undefined;
    if (typeof vmi.address !== "string" || typeof vmi.serial !== "number") return undefined;
  }
  return data as unknown as LabDescription;
}

/** Lab run directories (with a lab.json) under the run root whose prefix starts with `prefix`. */
export function findRunDirs(
  prefix: string,
  runRoot = DEFAULT_RUN_ROOT,
): { readonly dir: string; readonly state: LabDescription }[] {
  let entries: string[];
  try {
    entries = readdirSync(runRoot).filter((name) => name.startsWith(prefix));
  } catch {
    return [];
  }
  const found: { dir: string; state: LabDescription }[] = [];
  for (const name of entries) {
    const dir = join(runRoot, name);
    const state = readStateFile(join(dir, STATE_FILE));
    if (state) found.push({ dir, state });
  }
  return found;
}

export interface CleanupReport {
  readonly namespaces: readonly string[];
  readonly etcDirs: readonly string[];
  readonly runDirs: readonly string[];
}

function labNamespacePattern(prefix: string): RegExp {
  const escaped = prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`^${escaped}-(sw|router|ext|node\\d+|pod\\d+|vmi-[a-z0-9-]+)$`);
}

/**
 * Removes one lab by exact prefix, with or without its lab.json: its namespaces (processes
 * in them first), /etc/netns entries and run directory.
 */
export async function removeLab(
  prefix: string,
  options: { runner?: CommandRunner; runRoot?: string } = {},
): Promise<CleanupReport> {
  checkPrefix(prefix);
  const runner = options.runner ?? new ExecRunner();
  const runDir = join(options.runRoot ?? DEFAULT_RUN_ROOT, prefix);
  const state = readStateFile(join(runDir, STATE_FILE));
  const pattern = labNamespacePattern(prefix);
  const known = state
    ? [
        state.namespaces.switch,
        state.namespaces.router,
        state.namespaces.outside,
        state.namespaces.pod,
        ...state.namespaces.nodes,
        ...state.namespaces.vmis,
      ]
    : [];
  const namespaces = [
    ...new Set([...known, ...listNamespaces().filter((ns) => pattern.test(ns))]),
  ].filter((ns) => listNamespaces().includes(ns));
  await removeNamespaces(runner, namespaces);
  const etcDirs = etcNetnsWithPrefix(prefix).filter((name) => pattern.test(name));
  for (const name of etcDirs) await rm(join(NETNS_ETC_DIR, name), { recursive: true, force: true });
  const runDirs = state ? [runDir] : [];
  if (state) await rm(runDir, { recursive: true, force: true });
  return { namespaces, etcDirs, runDirs };
}

/** A lab built to be removed when its owner exits, whose owner is gone: a leftover. */
export function isStaleLab(state: LabDescription): boolean {
  const owner = state.owner;
  if (!owner?.removeOnExit) return false;
  return !processAlive(owner.pid) || processStartTime(owner.pid) !== owner.startTime;
}

/**
 * Removes the leftovers of every run whose names start with `prefix` (default "keip-"):
 * namespaces (stopping their processes by PID, SIGTERM then SIGKILL), /etc/netns entries,
 * and run directories holding a lab.json. With `staleOnly`, only labs whose lab.json says
 * they were to be removed by a process that is gone (see isStaleLab): a lab in use (a demo,
 * another test run) or kept on purpose stays, and so does anything without a lab.json.
 */
export async function cleanup(
  options: { prefix?: string; runner?: CommandRunner; runRoot?: string; staleOnly?: boolean } = {},
): Promise<CleanupReport> {
  const prefix = options.prefix ?? DEFAULT_PREFIX_BASE;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{2,}$/.test(prefix)) {
    throw new Error(`cleanup prefix ${JSON.stringify(prefix)} is too broad or invalid`);
  }
  const runner = options.runner ?? new ExecRunner();
  const runRoot = options.runRoot ?? DEFAULT_RUN_ROOT;
  if (options.staleOnly) {
    const report = { namespaces: [] as string[], etcDirs: [] as string[], runDirs: [] as string[] };
    for (const { state } of findRunDirs(prefix, runRoot).filter((d) => isStaleLab(d.state))) {
      const r = await removeLab(state.prefix, { runner, runRoot });
      report.namespaces.push(...r.namespaces);
      report.etcDirs.push(...r.etcDirs);
      report.runDirs.push(...r.runDirs);
    }
    return report;
  }
  const namespaces = listNamespaces().filter((ns) => ns.startsWith(prefix));
  await removeNamespaces(runner, namespaces);
  const etcDirs = etcNetnsWithPrefix(prefix);
  for (const name of etcDirs) await rm(join(NETNS_ETC_DIR, name), { recursive: true, force: true });
  const runDirs = findRunDirs(prefix, runRoot).map((d) => d.dir);
  for (const dir of runDirs) await rm(dir, { recursive: true, force: true });
  return { namespaces, etcDirs, runDirs };
}
