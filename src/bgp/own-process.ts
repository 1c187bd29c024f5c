// Which process a PID file names, proven before any signal. A PID alone is a number the
// kernel hands out again once its process is gone; signalling it could stop anything on the
// node (another gobgpd, a process that took the number after a reboot). So the speaker
// records, with the PID, what makes the process unique: the boot it ran in, its start time
// (field 22 of /proc/PID/stat, clock ticks since boot, fixed for the life of the process),
// its executable and its command line. A process is ours only while all of them still match,
// and that is checked right before each signal.
import { readFile, readlink, rename, writeFile } from "node:fs/promises";

export interface ProcessIdentity {
  readonly pid: number;
  readonly bootId: string;
  readonly startTime: string;
  readonly exe: string;
  readonly cmdline: readonly string[];
}

/** The identity of the process running as `pid` now; undefined if none runs (or a zombie). */
export async function identify(pid: number): Promise<ProcessIdentity | undefined> {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const [stat, exe, cmdline, bootId] = await Promise.all([
      readFile(`/proc/${pid}/stat`, "utf8"),
      readlink(`/proc/${pid}/exe`),
      readFile(`/proc/${pid}/cmdline`, "utf8"),
      readFile("/proc/sys/kernel/random/boot_id", "utf8"),
    ]);
    // "PID (comm) STATE PPID ...": comm may hold spaces and parentheses; fields 3 and on
    // follow the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = fields[0];
    const startTime = fields[22 - 3];
    if (state === undefined || /[ZX]/.test(state) || startTime === undefined) return undefined;
    return {
      pid,
      bootId: bootId.trim(),
      startTime,
      // A binary replaced on disk (a package upgrade) still runs: the same process.
      exe: exe.replace(/ \(deleted\)$/, ""),
      cmdline: cmdline.split("\0").slice(0, -1),
    };
  } catch {
    // Gone, or not ours to read (another user's process hides its exe).
    return undefined;
  }
}

export function sameProcess(a: ProcessIdentity, b: ProcessIdentity): boolean {
  return (
    a.pid === b.pid &&
    a.bootId === b.bootId &&
    a.startTime === b.startTime &&
    a.exe === b.exe &&
    a.cmdline.length === b.cmdline.length &&
    a.cmdline.every((arg, i) => arg === b.cmdline[i])
  );
}

/** True while the recorded process itself (not a successor to its PID) runs. */
export async function isRunning(recorded: ProcessIdentity): Promise<boolean> {
  const now = await identify(recorded.pid);
  return now !== undefined && sameProcess(now, recorded);
}

/** Sends `signal` only if the recorded process still runs; says whether it was sent. */
export async function signalIfRunning(
  recorded: ProcessIdentity,
  signal: NodeJS.Signals,
): Promise<boolean> {
  if (!(await isRunning(recorded))) return false;
  process.kill(recorded.pid, signal);
  return true;
}

/** SIGTERM, then SIGKILL after 5 s: each only to the recorded process. */
export async function terminate(recorded: ProcessIdentity): Promise<void> {
  if (!(await signalIfRunning(recorded, "SIGTERM"))) return;
  for (let i = 0; i < 50 && (await isRunning(recorded)); i++) await sleep(100);
  await signalIfRunning(recorded, "SIGKILL");
}

/** Why a PID file cannot be trusted, or the identity it records. */
export type Recorded =
  { readonly identity: ProcessIdentity } | { readonly identity?: undefined; readonly why: string };

/** Reads a PID file written by writeRecord. Anything else (an older agent's bare PID) is not trusted. */
export async function readRecord(file: string): Promise<Recorded | undefined> {
  const text = await readFile(file, "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const r = JSON.parse(text) as Partial<ProcessIdentity>;
    if (
      Number.isInteger(r.pid) &&
      typeof r.bootId === "string" &&
      typeof r.startTime === "string" &&
      typeof r.exe === "string" &&
      Array.isArray(r.cmdline) &&
      r.cmdline.every((a) => typeof a === "string")
    ) {
      return { identity: r as ProcessIdentity };
    }
  } catch {
    // Not JSON: below.
  }
  return { why: "it does not record the process's start time, executable and command line" };
}

/** Writes the record atomically: a crash leaves the old file or the new one. */
export async function writeRecord(file: string, identity: ProcessIdentity): Promise<void> {
  const tmp = `${file}.tmp`;
  await writeFile(tmp, JSON.stringify(identity) + "\n", { mode: 0o600 });
  await rename(tmp, file);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
