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

import { mkdir, rm } from "node:fs/promises";
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { ExecRunner, type CommandRunner, type RunResult } from "../kernel/runner.js";
import { listNamespaces, NETNS_ETC_DIR, removeNamespaces, removeNamespacesSync } from "./netns.js";
import { spawnTracked, type LabProcess } from "./process.js";
import {
  Addressing,
  buildPlan,
  checkPrefix,
  namespaceNames,
  podNodeIndex,
  SEED_TOPOLOGY,
  type IptablesMode,
  type LabNames,
  type LabTopology,
} from "./topology.js";
import { buildNetwork, defaultPrefix, resolveIptablesModes } from "./lab-build.js";
import { describeLab, nodeInfo, podInfo } from "./lab-describe.js";
import { registerExit, unregisterExit } from "./lab-exit.js";
import { readStateFile } from "./lab-leftovers.js";
import { arping, ping, tcpRequest, udpRequest } from "./lab-traffic.js";
import {
  DEFAULT_RUN_ROOT,
  STATE_FILE,
  WHOAMI_SCRIPT,
  type DownOptions,
  type ExecOptions,
  type LabConfig,
  type LabDescription,
  type LabOptions,
  type NodeInfo,
  type PingOptions,
  type PingResult,
  type PodInfo,
  type SpawnOptions,
  type VmiInfo,
} from "./lab-types.js";
import { LabVmis } from "./lab-vmis.js";

export { SEED_TOPOLOGY, type IptablesMode, type LabNames, type LabTopology } from "./topology.js";
export type { LabProcess, ProcessExit } from "./process.js";
export {
  DEFAULT_PREFIX_BASE,
  DEFAULT_RUN_ROOT,
  STATE_FILE,
  WHOAMI_SCRIPT,
  type CleanupReport,
  type DownOptions,
  type ExecOptions,
  type IptablesModeOption,
  type LabDescription,
  type LabOptions,
  type LabOwner,
  type NodeInfo,
  type PingOptions,
  type PingResult,
  type PodInfo,
  type ProcessInfo,
  type SpawnOptions,
  type VmiInfo,
} from "./lab-types.js";
export { defaultPrefix, resolveIptablesModes } from "./lab-build.js";
export { cleanup, findRunDirs, isStaleLab, readStateFile, removeLab } from "./lab-leftovers.js";

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
  private readonly processes = new Set<LabProcess & { killNow(): void }>();
  private readonly processNames = new Set<string>();
  /** Namespaces this object created or adopted: the only ones it ever deletes. */
  private readonly owned = new Set<string>();
  private readonly vmiTable: LabVmis;
  private readonly downHooks: (() => Promise<void> | void)[] = [];
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
    this.vmiTable = new LabVmis({
      prefix: this.prefix,
      runner: this.runner,
      names: this.names,
      addressing: this.addressing,
      firstVmiHost: this.topology.firstVmiHost,
      nodeCount: this.nodeCount,
      podNode: this.podNode,
      podAddress: this.addressing.podAddress(this.podNode, this.topology.podHost),
      owned: this.owned,
      checkUp: () => this.checkUp(),
      checkNode: (i) => this.checkNode(i),
      stopProcessesIn: async (ns) => {
        await Promise.all([...this.processes].filter((p) => p.ns === ns).map((p) => p.stop()));
      },
      saveState: () => this.saveState(),
    });
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
    lab.vmiTable.restore(state.vmis, state.nextVmiSerial);
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
    const nodes = Array.from({ length: this.nodeCount }, (_, k) => this.names.node(k + 1));
    await buildNetwork(this.runner, plan, nodes);
    this.saveState({ strict: true });
  }

  // ---- names and addresses ----

  nodeNamespace(i: number): string {
    this.checkNode(i);
    return this.names.node(i);
  }

  vmiNamespace(name: string): string {
    return this.vmiTable.namespace(name);
  }

  private checkNode(i: number): void {
    if (!Number.isInteger(i) || i < 1 || i > this.nodeCount) {
      throw new Error(`node index ${i} out of range 1..${this.nodeCount}`);
    }
  }

  /** All namespaces of this lab (infrastructure and VMIs). */
  namespaces(): string[] {
    return [...this.infraNamespaces(), ...this.vmiTable.namespaces()];
  }

  private checkOwnNamespace(ns: string): void {
    if (!this.namespaces().includes(ns)) {
      throw new Error(`${ns} is not a namespace of lab ${this.prefix}`);
    }
  }

  node(i: number): NodeInfo {
    this.checkNode(i);
    return nodeInfo(this.addressing, this.names, this.iptablesModes, i);
  }

  pod(): PodInfo {
    return podInfo(this.addressing, this.names, this.topology, this.podNode);
  }

  vmi(name: string): VmiInfo {
    return this.vmiTable.info(name);
  }

  listVmis(): VmiInfo[] {
    return this.vmiTable.list();
  }

  describe(): LabDescription {
    return describeLab({
      prefix: this.prefix,
      runDir: this.runDir,
      topology: this.topology,
      addressing: this.addressing,
      names: this.names,
      nodes: Array.from({ length: this.nodeCount }, (_, k) => this.node(k + 1)),
      pod: this.pod(),
      vmis: this.listVmis(),
      processes: [...this.processes],
      removeOnExit: this.removedOnExit,
      nextVmiSerial: this.vmiTable.nextSerial,
    });
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

  /**
   * Creates namespace `<prefix>-vmi-<name>` with eth0 plugged into node `node`'s cni0
   * (1-based), with the given address or the next free one from .10 up.
   */
  addVmi(name: string, node: number, address?: string): Promise<VmiInfo> {
    return this.vmiTable.add(name, node, address);
  }

  /**
   * Re-plugs a VMI into another node's cni0 (a new veth; the namespace and the processes in
   * it stay). Its address becomes `newAddress` or the next free one on the new node.
   * Resolves to the new address.
   */
  moveVmi(name: string, toNode: number, newAddress?: string): Promise<string> {
    return this.vmiTable.move(name, toNode, newAddress);
  }

  /**
   * A live migration under a CNI that keeps VM addresses: the VMI goes to node `toNode`
   * with its address, MAC and everything in its namespace as they are (see lab-vmis.ts);
   * the nodes' routes follow it.
   */
  migrateVmi(name: string, toNode: number): Promise<void> {
    return this.vmiTable.migrate(name, toNode);
  }

  /** Stops the VMI's processes and deletes its namespace. */
  removeVmi(name: string): Promise<void> {
    return this.vmiTable.remove(name);
  }

  // ---- traffic ----

  /** Pings from a lab namespace. Never rejects for lost packets or unreachable networks. */
  ping(fromNs: string, address: string, options: PingOptions = {}): Promise<PingResult> {
    return ping((ns, argv) => this.exec(ns, argv), fromNs, address, options);
  }

  /**
   * Asks who has `address` with broadcast ARP requests (iputils arping) from a device of a
   * lab namespace, for `timeoutSec` (default 1) seconds; `source` is the sender address
   * (needed for targets the namespace has no route to). Resolves to the MAC addresses that
   * answered, lowercase, each once, in order; [] when nothing answered.
   */
  arping(
    fromNs: string,
    device: string,
    address: string,
    options: { source: string; timeoutSec?: number },
  ): Promise<string[]> {
    return arping((ns, argv) => this.exec(ns, argv), fromNs, device, address, options);
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
  tcpRequest(
    fromNs: string,
    address: string,
    port: number,
    options: { timeoutSec?: number } = {},
  ): Promise<string> {
    return tcpRequest((ns, argv) => this.exec(ns, argv), fromNs, address, port, options);
  }

  /** The UDP equivalent of tcpRequest (the who-are-you server answers UDP as well). */
  udpRequest(
    fromNs: string,
    address: string,
    port: number,
    options: { timeoutMs?: number } = {},
  ): Promise<string> {
    return udpRequest((ns, argv) => this.exec(ns, argv), fromNs, address, port, options);
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
