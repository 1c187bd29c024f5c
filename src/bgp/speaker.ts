// The BGP speaker the agent announces through: a gobgpd it runs itself, or one it is given
// (a sidecar). It configures the speaker through gobgpd's API (global AS and router id, the
// peers), watches it, and brings a fresh one back when it dies or stops answering.
//
// Whoever reaches gobgpd's API can announce any prefix from the node, so a gobgpd of our own
// serves it on a Unix socket in a directory only the agent's user may enter
// (<state dir>/gobgpd/, mode 0700), not on a TCP port any process or hostNetwork pod of the
// node could dial; TCP only when --gobgp-api-port asks for it.
//
// A gobgpd of our own outlives the agent: it is started in its own session, its PID and
// identity (own-process.ts) kept in the state directory, and a restarted agent adopts it, so
// an agent restart or upgrade leaves the BGP sessions, and so the routes at the router,
// untouched. Only a process proven to be that gobgpd is adopted or signalled, never one
// that took its PID. A gobgpd that is found dead or wrongly configured is replaced, and its
// peers are added with the graceful restart "restarting" flag: a router that kept our routes
// as stale keeps them until the new speaker has sent them all again (End-of-RIB), rather
// than dropping them at once.
// Paths live only in gobgpd's memory; after a fresh speaker starts, `announce` (the apply
// loop re-reading and re-announcing every bound EIP) runs before any peer is added, so the
// first update a router receives already holds all of them.
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { chmod, lstat, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Logger } from "pino";
import { type BackoffOptions, backoffDelay } from "../common/backoff.js";
import { type Clock, type Timer, realClock, sleep } from "../common/clock.js";
import type {
  GlobalConfig,
  ListedPeer,
  PeerConfig,
  PeerStatus,
  SessionState,
} from "./gobgp-api.js";
import {
  type ProcessIdentity,
  identify,
  isRunning,
  readRecord,
  terminate,
  writeRecord,
} from "./own-process.js";

/** The gobgpd API calls the speaker needs (GobgpClient; a fake in unit tests). */
export interface SpeakerApi {
  getGlobal(timeoutMs?: number): Promise<{ asn: number; routerId: string }>;
  startBgp(global: GlobalConfig): Promise<void>;
  addPeer(peer: PeerConfig & { restarting?: boolean }): Promise<void>;
  deletePeer(address: string): Promise<void>;
  listPeers(): Promise<ListedPeer[]>;
  watchPeers(onPeer: (peer: PeerStatus) => void, onEnd: (err?: Error) => void): () => void;
}

export interface SpeakerOptions {
  readonly global: GlobalConfig;
  readonly peers: readonly PeerConfig[];
  /** An existing gobgpd's API (unix:/path or host:port); none: run our own. */
  readonly endpoint?: string;
  /** Our own gobgpd: the binary, and a loopback port for its API instead of the socket. */
  readonly binary: string;
  readonly apiPort?: number;
  /** Holds gobgpd.pid, gobgpd.log and gobgpd/api.sock. */
  readonly stateDir: string;
  readonly logger: Logger;
  /** Announces every bound EIP to a speaker that holds none (a fresh one). */
  readonly announce: () => Promise<void>;
  /** Peer session changes, for metrics. */
  readonly onPeerState?: (peer: PeerStatus) => void;
  readonly probeIntervalMs?: number;
  /** The clock of the probes, the restarts and the start's wait; the real one by default. */
  readonly clock?: Clock;
}

const PID_FILE = "gobgpd.pid";
const LOG_FILE = "gobgpd.log";
/** Failed probes in a row after which a gobgpd of ours is restarted. */
const PROBE_FAILURES_MAX = 3;
const RESTART_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 30_000 };

/** A gobgpd of ours: the process we started or adopted. */
interface OwnProcess {
  readonly identity: ProcessIdentity;
  exited: boolean;
}

/** The Unix socket of the API of the gobgpd the agent runs. */
export function ownApiSocket(stateDir: string): string {
  return join(stateDir, "gobgpd", "api.sock");
}

export class GobgpSpeaker {
  private process: OwnProcess | undefined;
  private stopWatch: (() => void) | undefined;
  private probeTimer: Timer | undefined;
  private restartTimer: Timer | undefined;
  private probeFailures = 0;
  private restarts = 0;
  private stopped = false;
  private busy: Promise<void> = Promise.resolve();
  private readonly peerStates = new Map<string, SessionState>();

  private readonly clock: Clock;

  constructor(
    private readonly api: SpeakerApi,
    private readonly opts: SpeakerOptions,
  ) {
    this.clock = opts.clock ?? realClock;
  }

  /** The API address the agent talks to (a grpc-js target). */
  static target(opts: Pick<SpeakerOptions, "endpoint" | "apiPort" | "stateDir">): string {
    if (opts.endpoint !== undefined) return opts.endpoint;
    return opts.apiPort !== undefined
      ? `127.0.0.1:${opts.apiPort}`
      : `unix:${ownApiSocket(opts.stateDir)}`;
  }

  /** Brings the speaker up (adopting a running gobgpd of ours) and keeps watching it. */
  async start(): Promise<void> {
    await this.serialised(() => this.bringUp());
    this.probeEvery(this.opts.probeIntervalMs ?? 2000);
  }

  private probeEvery(ms: number): void {
    if (this.stopped) return;
    this.probeTimer = this.clock.setTimer(() => {
      this.probeEvery(ms);
      void this.serialised(() => this.probe());
    }, ms);
  }

  /** Stops watching. Our gobgpd keeps running, and with it the sessions and routes. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.probeTimer?.cancel();
    this.restartTimer?.cancel();
    this.stopWatch?.();
    await this.busy;
  }

  /** Every peer with its session state and the EIPs sent to it. */
  peers(): Promise<PeerStatus[]> {
    return this.api.listPeers();
  }

  get pid(): number | undefined {
    return this.process && !this.process.exited ? this.process.identity.pid : undefined;
  }

  /** Runs one bring-up, probe or restart at a time. */
  private serialised(fn: () => Promise<void>): Promise<void> {
    const next = this.busy.then(fn, fn).catch((err: unknown) => {
      this.opts.logger.error({ err }, "BGP speaker: failed");
      this.scheduleRestart();
    });
    this.busy = next;
    return next;
  }

  private async bringUp(): Promise<void> {
    const { logger, global, endpoint } = this.opts;
    if (endpoint === undefined) await this.ensureOwnProcess();
    else if (endpoint.startsWith("unix:")) await checkPrivateDir(dirname(endpoint.slice(5)));
    const running = await this.waitForApi();
    let fresh = running.asn === 0;
    if (!fresh && (running.asn !== global.asn || running.routerId !== global.routerId)) {
      if (this.opts.endpoint !== undefined) {
        throw new Error(
          `gobgpd at ${this.opts.endpoint} runs AS ${running.asn} router id ${running.routerId}, not AS ${global.asn} router id ${global.routerId}`,
        );
      }
      logger.warn(
        { running, wanted: { asn: global.asn, routerId: global.routerId } },
        "BGP speaker: our gobgpd runs another global config; replacing it",
      );
      await this.killOwnProcess();
      await this.ensureOwnProcess();
      await this.waitForApi();
      fresh = true;
    }
    if (fresh) {
      await this.api.startBgp(global);
      logger.info(
        { asn: global.asn, routerId: global.routerId, listenPort: global.listenPort },
        "BGP speaker started",
      );
    }
    // A fresh speaker holds no paths: give it every bound EIP before any peer is added.
    // Without peers, an apply that fails leaves nothing half announced.
    if (fresh) await this.opts.announce();
    await this.reconcilePeers(fresh);
    this.watch();
    this.probeFailures = 0;
  }

  private async reconcilePeers(fresh: boolean): Promise<void> {
    const { logger, peers } = this.opts;
    const existing = new Map((await this.api.listPeers()).map((p) => [p.address, p]));
    for (const peer of peers) {
      const have = existing.get(peer.address);
      existing.delete(peer.address);
      if (have && have.asn === peer.asn && sameSettings(have.settings, peer)) continue;
      if (have) await this.api.deletePeer(peer.address);
      // "Restarting": a router that kept our routes as stale keeps them until our End-of-RIB.
      await this.api.addPeer({ ...peer, restarting: fresh && peer.gracefulRestartSec > 0 });
      logger.info({ peer: peer.address, asn: peer.asn, port: peer.port }, "BGP peer added");
    }
    // Peers of our own gobgpd that the config no longer names; a sidecar's are its own.
    if (this.opts.endpoint === undefined) {
      for (const stale of existing.keys()) {
        await this.api.deletePeer(stale);
        logger.info({ peer: stale }, "BGP peer removed (no longer configured)");
      }
    }
  }

  private watch(): void {
    this.stopWatch?.();
    this.stopWatch = this.api.watchPeers(
      (peer) => {
        const before = this.peerStates.get(peer.address);
        this.peerStates.set(peer.address, peer.state);
        this.opts.onPeerState?.(peer);
        if (before === peer.state) return;
        if (peer.state === "ESTABLISHED") {
          this.opts.logger.info({ peer: peer.address, asn: peer.asn }, "BGP session up");
        } else if (before === "ESTABLISHED") {
          this.opts.logger.warn(
            { peer: peer.address, asn: peer.asn, state: peer.state },
            "BGP session down",
          );
        }
      },
      () => {
        // The speaker went away or restarted; the probe finds out which.
        this.stopWatch = undefined;
      },
    );
  }

  private async probe(): Promise<void> {
    if (this.stopped) return;
    const own = this.process;
    const dead = own !== undefined && (own.exited || !(await isRunning(own.identity)));
    let healthy = !dead;
    if (healthy) {
      try {
        const global = await this.api.getGlobal(1500);
        healthy = global.asn === this.opts.global.asn;
      } catch {
        healthy = false;
      }
    }
    if (healthy) {
      this.probeFailures = 0;
      this.restarts = 0;
      if (!this.stopWatch) this.watch();
      return;
    }
    this.probeFailures++;
    if (!dead && this.probeFailures < PROBE_FAILURES_MAX) return;
    this.opts.logger.error(
      { pid: own?.identity.pid, dead, failures: this.probeFailures },
      dead ? "BGP speaker: gobgpd exited; starting it again" : "BGP speaker: gobgpd not answering",
    );
    this.stopWatch?.();
    this.stopWatch = undefined;
    for (const address of this.peerStates.keys()) this.peerStates.set(address, "UNKNOWN");
    if (this.opts.endpoint === undefined && !dead) await this.killOwnProcess();
    await this.bringUp();
  }

  private scheduleRestart(): void {
    if (this.stopped || this.restartTimer) return;
    const delay = backoffDelay(this.restarts, RESTART_BACKOFF);
    this.restarts++;
    this.restartTimer = this.clock.setTimer(() => {
      this.restartTimer = undefined;
      void this.serialised(() => this.bringUp());
    }, delay);
  }

  private async waitForApi(): Promise<{ asn: number; routerId: string }> {
    const deadline = this.clock.now() + 10_000;
    for (;;) {
      try {
        return await this.api.getGlobal(1000);
      } catch (err) {
        if (this.process?.exited) throw new Error("gobgpd exited at start; see gobgpd.log");
        if (this.clock.now() > deadline) {
          throw new Error(
            `gobgpd API at ${GobgpSpeaker.target(this.opts)} does not answer: ${(err as Error).message}`,
          );
        }
        await sleep(this.clock, 100);
      }
    }
  }

  /** gobgpd's arguments: the API on our socket, or on the loopback port asked for. */
  private gobgpdArgs(): string[] {
    const { apiPort, stateDir } = this.opts;
    const api = apiPort !== undefined ? `127.0.0.1:${apiPort}` : `unix://${ownApiSocket(stateDir)}`;
    return [`--api-hosts=${api}`, "--pprof-disable", "--log-level=info"];
  }

  /** Adopts the gobgpd our PID file names if it is still that process, else starts one. */
  private async ensureOwnProcess(): Promise<void> {
    const { logger, stateDir, apiPort } = this.opts;
    if (this.process && !this.process.exited && (await isRunning(this.process.identity))) return;
    const pidFile = join(stateDir, PID_FILE);
    const args = this.gobgpdArgs();
    const found = await runningOwnProcess(stateDir, logger);
    if (found && sameArgs(found.cmdline.slice(1), args)) {
      this.process = { identity: found, exited: false };
      logger.info({ pid: found.pid }, "BGP speaker: adopting the running gobgpd");
      return;
    }
    if (found) {
      logger.warn(
        { pid: found.pid, running: found.cmdline, wanted: args },
        "BGP speaker: our gobgpd serves its API elsewhere; replacing it",
      );
      await terminate(found);
    }
    if (apiPort === undefined) await prepareSocket(ownApiSocket(stateDir));
    const log = openSync(join(stateDir, LOG_FILE), "a");
    try {
      // Its own session: it outlives the agent, and a signal to the agent's group misses it.
      const child = spawn(this.opts.binary, args, {
        detached: true,
        stdio: ["ignore", log, log],
      });
      const started = await new Promise<number>((resolve, reject) => {
        child.once("error", reject);
        child.once("spawn", () => resolve(child.pid ?? 0));
      });
      const own = { exited: false };
      child.once("exit", (code, signal) => {
        own.exited = true;
        if (!this.stopped) {
          logger.error({ pid: started, code, signal }, "BGP speaker: gobgpd exited");
          void this.serialised(() => this.probe());
        }
      });
      child.unref();
      // After "spawn" the child has exec'd gobgpd: its identity is gobgpd's.
      const identity = await identify(started);
      if (!identity || own.exited) throw new Error("gobgpd exited at start; see gobgpd.log");
      this.process = Object.assign(own, { identity });
      await writeRecord(pidFile, identity);
      logger.info(
        { pid: started, api: GobgpSpeaker.target(this.opts) },
        "BGP speaker: gobgpd started",
      );
    } finally {
      closeSync(log);
    }
  }

  private async killOwnProcess(): Promise<void> {
    const own = this.process;
    this.process = undefined;
    if (!own || own.exited) return;
    await terminate(own.identity);
    own.exited = true;
  }
}

/** With --bgp-type none: stops a gobgpd a former configuration of the agent left running. */
export async function stopLeftoverSpeaker(stateDir: string, logger: Logger): Promise<void> {
  const found = await runningOwnProcess(stateDir, logger);
  if (found) {
    logger.info(
      { pid: found.pid },
      "BGP is off: stopping the gobgpd left by an earlier configuration",
    );
    await terminate(found);
  }
  await removeSocket(ownApiSocket(stateDir));
  await rm(join(stateDir, PID_FILE), { force: true });
}

/**
 * The gobgpd our PID file records, if that very process still runs. A process that took its
 * PID since, or a PID file that proves nothing (an older agent's bare PID), is left alone.
 */
async function runningOwnProcess(
  stateDir: string,
  logger: Logger,
): Promise<ProcessIdentity | undefined> {
  const recorded = await readRecord(join(stateDir, PID_FILE));
  if (!recorded) return undefined;
  if (!recorded.identity) {
    logger.warn(
      { why: recorded.why },
      "BGP speaker: PID file not trusted; its process is left alone",
    );
    return undefined;
  }
  if (await isRunning(recorded.identity)) return recorded.identity;
  logger.info({ pid: recorded.identity.pid }, "BGP speaker: the recorded gobgpd no longer runs");
  return undefined;
}

function sameArgs(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((arg, i) => arg === b[i]);
}

function sameSettings(have: ListedPeer["settings"], want: PeerConfig): boolean {
  return (
    have.port === want.port &&
    have.password === want.password &&
    have.holdTimeSec === want.holdTimeSec &&
    have.connectRetrySec === want.connectRetrySec &&
    have.gracefulRestartSec === want.gracefulRestartSec
  );
}

/** Only the agent's user may enter `dir`: a directory (not a link) of ours, mode 0700 or less. */
async function checkPrivateDir(dir: string): Promise<void> {
  const st = await lstat(dir);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory()) throw new Error(`${dir} (gobgpd's API socket) is not a directory`);
  if (st.uid !== uid) {
    throw new Error(
      `${dir} (gobgpd's API socket) belongs to uid ${st.uid}, not the agent's ${uid}`,
    );
  }
  if ((st.mode & 0o077) !== 0) {
    throw new Error(
      `${dir} (gobgpd's API socket) is open to other users (mode ${(st.mode & 0o777).toString(8)}); make it 0700`,
    );
  }
}

/** Our socket's directory made private, and a socket a dead gobgpd left there removed. */
async function prepareSocket(socket: string): Promise<void> {
  const dir = dirname(socket);
  await mkdir(dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "EEXIST") throw err;
  });
  const st = await lstat(dir);
  // Ours by name in our state directory: make it private again if someone opened it.
  if (st.isDirectory() && !st.isSymbolicLink() && st.uid === (process.getuid?.() ?? 0)) {
    await chmod(dir, 0o700);
  }
  await checkPrivateDir(dir);
  await removeSocket(socket);
}

async function removeSocket(socket: string): Promise<void> {
  const st = await lstat(socket).catch(() => undefined);
  if (st?.isSocket()) await rm(socket);
}
