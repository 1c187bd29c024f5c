// The one way this program runs another program: an argument array and optional stdin,
// never a shell, and never without a time limit. Everything that touches the kernel
// receives a CommandRunner through its constructor, so unit tests can record commands
// instead of running them.
//
// A command past its limit is killed with SIGKILL, with everything it started: each command
// runs in a process group of its own (a wrapper script, `ip netns exec`, a tool that forks),
// and the whole group is killed, so nothing it started can finish the work later. The call
// then rejects at once with CommandTimeout (a CommandError), which the kernel managers turn
// into a failure of their phase, retried by the apply loop like any other.
import { spawn } from "node:child_process";

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly input?: string;
  /** This call's time limit, instead of the runner's. */
  readonly timeoutMs?: number;
}

export interface CommandRunner {
  run(command: string, args: readonly string[], options?: RunOptions): Promise<RunResult>;
}

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    detail?: string,
  ) {
    super(
      `${command} ${args.join(" ")} failed (${detail ?? `exit ${exitCode ?? "signal"}`}): ${stderr.trim() || "no error output"}`,
    );
    this.name = "CommandError";
  }
}

/** A command killed because it ran past its time limit. */
export class CommandTimeout extends CommandError {
  constructor(
    command: string,
    args: readonly string[],
    readonly timeoutMs: number,
    stderr: string,
  ) {
    super(command, args, null, stderr, `timed out after ${timeoutMs} ms, killed`);
    this.name = "CommandTimeout";
  }
}

/** The limit of an ExecRunner built without one: long enough for any tool this project runs. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 120_000;

/** Runs commands with spawn(); rejects with CommandError on a non-zero exit or a timeout. */
export class ExecRunner implements CommandRunner {
  private readonly timeoutMs: number;

  constructor(options: { readonly timeoutMs?: number } = {}) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  }

  run(command: string, args: readonly string[], options: RunOptions = {}) {
    const limit = options.timeoutMs ?? this.timeoutMs;
    return new Promise<RunResult>((resolve, reject) => {
      // detached: the child leads a new process group, which a timeout kills whole.
      const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], detached: true });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        killGroup(child.pid);
        reject(new CommandTimeout(command, args, limit, Buffer.concat(err).toString("utf8")));
      }, limit);
      child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
      child.stderr.on("data", (chunk: Buffer) => err.push(chunk));
      child.on("error", (e) => {
        clearTimeout(timer);
        if (!settled) reject(e);
        settled = true;
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        const stdout = Buffer.concat(out).toString("utf8");
        const stderr = Buffer.concat(err).toString("utf8");
        if (code === 0) resolve({ stdout, stderr });
        else reject(new CommandError(command, args, code, stderr));
      });
      // A child that exits before reading all of stdin raises EPIPE; its exit code tells.
      child.stdin.on("error", () => {});
      child.stdin.end(options.input ?? "");
    });
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}
