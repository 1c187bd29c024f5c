// The one way this program runs another program: an argument array and optional stdin,
// never a shell. Everything that touches the kernel receives a CommandRunner through its
// constructor, so unit tests can record commands instead of running them.
import { spawn } from "node:child_process";

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
}

export interface CommandRunner {
  run(command: string, args: readonly string[], options?: { input?: string }): Promise<RunResult>;
}

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(
      `${command} ${args.join(" ")} failed (exit ${exitCode ?? "signal"}): ${stderr.trim() || "no error output"}`,
    );
    this.name = "CommandError";
  }
}

/** Runs commands with spawn(); rejects with CommandError on a non-zero exit. */
export class ExecRunner implements CommandRunner {
  run(command: string, args: readonly string[], options: { input?: string } = {}) {
    return new Promise<RunResult>((resolve, reject) => {
      const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
      child.stderr.on("data", (chunk: Buffer) => err.push(chunk));
      child.on("error", reject);
      child.on("close", (code) => {
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
