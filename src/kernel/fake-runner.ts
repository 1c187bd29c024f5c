// A CommandRunner for unit tests: it records every call and answers from canned output,
// so a manager's reads and writes can be checked without running anything.
import { CommandError, type CommandRunner, type RunOptions, type RunResult } from "./runner.js";

export interface RecordedCall {
  readonly command: string;
  readonly args: readonly string[];
  readonly input: string | undefined;
}

/** What a handler returns: stdout text, a full result, or an error to reject with. */
export type FakeAnswer = string | RunResult | Error;
export type FakeHandler = (call: RecordedCall) => FakeAnswer | undefined;

export class FakeRunner implements CommandRunner {
  readonly calls: RecordedCall[] = [];
  private readonly handlers: FakeHandler[] = [];

  /**
   * Answers calls whose `command args...` line equals `line` (or satisfies the predicate).
   * Later registrations win over earlier ones.
   */
  on(line: string | ((call: RecordedCall) => boolean), answer: FakeAnswer | FakeHandler): this {
    const matches =
      typeof line === "string" ? (call: RecordedCall) => commandLine(call) === line : line;
    this.handlers.unshift((call) => {
      if (!matches(call)) return undefined;
      return typeof answer === "function" ? answer(call) : answer;
    });
    return this;
  }

  run(command: string, args: readonly string[], options?: RunOptions): Promise<RunResult> {
    const call: RecordedCall = { command, args: [...args], input: options?.input };
    this.calls.push(call);
    for (const handler of this.handlers) {
      const answer = handler(call);
      if (answer === undefined) continue;
      if (answer instanceof Error) return Promise.reject(answer);
      if (typeof answer === "string") return Promise.resolve({ stdout: answer, stderr: "" });
      return Promise.resolve(answer);
    }
    return Promise.resolve({ stdout: "", stderr: "" });
  }

  /** The recorded command lines, e.g. "ipset save". */
  lines(): string[] {
    return this.calls.map(commandLine);
  }

  clear(): void {
    this.calls.length = 0;
  }
}

export function commandLine(call: { command: string; args: readonly string[] }): string {
  return [call.command, ...call.args].join(" ");
}

/** The error ExecRunner would reject with. */
export function failure(line: string, stderr: string, exitCode = 1): CommandError {
  const [command = "", ...args] = line.split(" ");
  return new CommandError(command, args, exitCode, stderr);
}

/** Runs commands through another runner and records them (for tests against a real kernel). */
export class RecordingRunner implements CommandRunner {
  readonly calls: RecordedCall[] = [];

  constructor(private readonly inner: CommandRunner) {}

  run(command: string, args: readonly string[], options?: RunOptions): Promise<RunResult> {
    this.calls.push({ command, args: [...args], input: options?.input });
    return this.inner.run(command, args, options);
  }

  lines(): string[] {
    return this.calls.map(commandLine);
  }

  clear(): void {
    this.calls.length = 0;
  }
}
