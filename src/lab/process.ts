// Long-running processes inside lab namespaces (agents, servers, captures), or in this
// process's own namespace (the Kubernetes control plane of src/kube-lab by default). A
// CommandRunner runs a command to completion; these must outlive the call, so they are spawned
// here, still as argument arrays and never through a shell, tracked by PID and stopped by PID.

import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { processAlive } from "./netns.js";

/** Most recent output kept in memory per process (the log file has all of it). */
const OUTPUT_TAIL_BYTES = 1 << 20;

export interface ProcessExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A network namespace by name; `undefined` (where the type allows it) is this process's own. */
type Netns = string | undefined;

export interface LabProcess<Ns extends Netns = string> {
  /** Unique name within the lab; also the log file's name. */
  readonly name: string;
  /** Namespace the process runs in. */
  readonly ns: Ns;
  readonly argv: readonly string[];
  readonly pid: number;
  readonly child: ChildProcess;
  /** stdout and stderr, interleaved as they arrive. */
  readonly logFile: string;
  /** Settles when the process has exited (never rejects). */
  readonly exited: Promise<ProcessExit>;
  running(): boolean;
  /** The output so far (at most the last MiB). */
  output(): string;
  /** Resolves once the output contains the pattern; rejects on exit or timeout. */
  waitFor(pattern: RegExp | string, timeoutMs?: number): Promise<void>;
  /** SIGTERM, then SIGKILL after graceMs; resolves when the process has exited. */
  stop(graceMs?: number): Promise<ProcessExit>;
}

export interface SpawnSpec<Ns extends Netns = string> {
  readonly name: string;
  readonly ns: Ns;
  readonly argv: readonly string[];
  readonly logFile: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
}

class TrackedProcess<Ns extends Netns> implements LabProcess<Ns> {
  readonly name: string;
  readonly ns: Ns;
  readonly argv: readonly string[];
  readonly pid: number;
  readonly child: ChildProcess;
  readonly logFile: string;
  readonly exited: Promise<ProcessExit>;
  private tail = "";
  private exit: ProcessExit | undefined;
  private readonly log: WriteStream;
  private readonly waiters = new Set<() => void>();

  constructor(spec: SpawnSpec<Ns>) {
    this.name = spec.name;
    this.ns = spec.ns;
    this.argv = spec.argv;
    this.logFile = spec.logFile;
    this.log = createWriteStream(spec.logFile, { flags: "a" });
    this.log.on("error", () => {});
    // `ip netns exec` execs the program, so the child's PID is the program's own.
    const [command = "", ...args] =
      spec.ns === undefined ? spec.argv : ["ip", "netns", "exec", spec.ns, ...spec.argv];
    this.child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: spec.env ? { ...process.env, ...spec.env } : process.env,
      cwd: spec.cwd,
    });
    const onData = (chunk: Buffer) => {
      this.log.write(chunk);
      this.tail += chunk.toString("utf8");
      if (this.tail.length > OUTPUT_TAIL_BYTES) this.tail = this.tail.slice(-OUTPUT_TAIL_BYTES);
      for (const wake of this.waiters) wake();
    };
    this.child.stdout?.on("data", onData);
    this.child.stderr?.on("data", onData);
    this.exited = new Promise<ProcessExit>((resolve) => {
      const finish = (exit: ProcessExit) => {
        if (this.exit) return;
        this.exit = exit;
        this.log.end();
        resolve(exit);
        for (const wake of this.waiters) wake();
      };
      this.child.on("error", (err) => {
        onData(Buffer.from(`spawn failed: ${err.message}\n`));
        finish({ code: null, signal: null });
      });
      this.child.on("close", (code, signal) => finish({ code, signal }));
    });
    if (this.child.pid === undefined) {
      // spawn() failed synchronously (the 'error' event follows); no PID to track.
      this.pid = -1;
    } else {
      this.pid = this.child.pid;
    }
  }

  running(): boolean {
    return this.exit === undefined && this.pid > 0;
  }

  output(): string {
    return this.tail;
  }

  private where(): string {
    return this.ns ?? "this namespace";
  }

  waitFor(pattern: RegExp | string, timeoutMs = 10_000): Promise<void> {
    const matches = () =>
      typeof pattern === "string" ? this.tail.includes(pattern) : pattern.test(this.tail);
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        if (matches()) done();
        else if (this.exit) {
          done(
            new Error(
              `${this.name} (${this.argv.join(" ")}) in ${this.where()} exited (code ${this.exit.code}, signal ${this.exit.signal}) before printing ${String(pattern)}; output:\n${this.tail.slice(-2000)}`,
            ),
          );
        }
      };
      const timer = setTimeout(
        () =>
          done(
            new Error(
              `${this.name} in ${this.where()} did not print ${String(pattern)} within ${timeoutMs} ms; output:\n${this.tail.slice(-2000)}`,
            ),
          ),
        timeoutMs,
      );
      this.waiters.add(check);
      check();
    });
  }

  async stop(graceMs = 3000): Promise<ProcessExit> {
    if (!this.running()) return this.exited;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => {
      if (this.running()) this.child.kill("SIGKILL");
    }, graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  /** For the exit handler: nothing can be awaited there. */
  killNow(): void {
    if (this.running() && processAlive(this.pid)) this.child.kill("SIGKILL");
  }
}

export function spawnTracked<Ns extends Netns = string>(
  spec: SpawnSpec<Ns>,
): LabProcess<Ns> & { killNow(): void } {
  return new TrackedProcess(spec);
}
