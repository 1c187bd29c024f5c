// Network namespaces by name: list, find and stop the processes inside, delete. Every
// command runs through a CommandRunner, except in the synchronous variants used from a
// process 'exit' handler, where nothing asynchronous can run any more.

import { spawnSync } from "node:child_process";
import { readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { CommandRunner } from "../kernel/runner.js";

export const NETNS_RUN_DIR = "/run/netns";
export const NETNS_ETC_DIR = "/etc/netns";

/** Names of all named network namespaces (those `ip netns list` shows). */
export function listNamespaces(): string[] {
  try {
    return readdirSync(NETNS_RUN_DIR).sort();
  } catch {
    return [];
  }
}

export function namespacesWithPrefix(prefix: string): string[] {
  return listNamespaces().filter((name) => name.startsWith(prefix));
}

function parsePids(text: string): number[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => /^\d+$/.test(line))
    .map(Number)
    .filter((pid) => pid > 1 && pid !== process.pid);
}

/** PIDs of the processes in a namespace (none if it does not exist). */
export async function namespacePids(runner: CommandRunner, ns: string): Promise<number[]> {
  try {
    return parsePids((await runner.run("ip", ["netns", "pids", ns])).stdout);
  } catch {
    return [];
  }
}

/** True while the process exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // "pid (comm) S ...": the state follows the last ')'.
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/**
 * When the process started (clock ticks since boot, /proc/<pid>/stat field 22), so a PID
 * reused by another process is told apart; undefined when there is no such process.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // After "pid (comm)": state is field 3, starttime field 22.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

/** SIGTERM, then SIGKILL whatever is still alive after `graceMs`. By PID only. */
export async function stopPids(pids: readonly number[], graceMs = 2000): Promise<void> {
  let alive = pids.filter(processAlive);
  for (const pid of alive) signal(pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(20);
    alive = alive.filter(processAlive);
  }
  for (const pid of alive) signal(pid, "SIGKILL");
  const killDeadline = Date.now() + 2000;
  while (alive.length > 0 && Date.now() < killDeadline) {
    await sleep(10);
    alive = alive.filter(processAlive);
  }
}

/** Stops every process in the namespaces, deletes them and their /etc/netns directories. */
export async function removeNamespaces(
  runner: CommandRunner,
  names: readonly string[],
  options: { graceMs?: number } = {},
): Promise<void> {
  const existing = new Set(listNamespaces());
  const present = names.filter((name) => existing.has(name));
  const pids = (await Promise.all(present.map((ns) => namespacePids(runner, ns)))).flat();
  await stopPids([...new Set(pids)], options.graceMs);
  if (present.length > 0) {
    const input = present.map((name) => `netns del ${name}\n`).join("");
    try {
      await runner.run("ip", ["-force", "-batch", "-"], { input });
    } catch {
      // Checked below, name by name.
    }
  }
  for (const name of names) rmSync(join(NETNS_ETC_DIR, name), { recursive: true, force: true });
  const left = listNamespaces().filter((name) => present.includes(name));
  if (left.length > 0) throw new Error(`could not delete namespaces: ${left.join(", ")}`);
}

/** An exit handler cannot wait for long: each command gets 10 s. */
const SYNC_LIMIT = { timeout: 10_000, killSignal: "SIGKILL" } as const;

/**
 * The same, synchronously and with SIGKILL at once: for a process 'exit' handler. Runs `ip`
 * with an argument array (never a shell) and swallows every error.
 */
export function removeNamespacesSync(names: readonly string[]): void {
  const existing = new Set(listNamespaces());
  const present = names.filter((name) => existing.has(name));
  for (const ns of present) {
    const result = spawnSync("ip", ["netns", "pids", ns], { encoding: "utf8", ...SYNC_LIMIT });
    for (const pid of parsePids(result.stdout ?? "")) signal(pid, "SIGKILL");
  }
  if (present.length > 0) {
    const input = present.map((name) => `netns del ${name}\n`).join("");
    spawnSync("ip", ["-force", "-batch", "-"], { input, encoding: "utf8", ...SYNC_LIMIT });
  }
  for (const name of names) {
    try {
      rmSync(join(NETNS_ETC_DIR, name), { recursive: true, force: true });
    } catch {
      // Best effort.
    }
  }
}

/** /etc/netns entries whose name starts with the prefix. */
export function etcNetnsWithPrefix(prefix: string): string[] {
  try {
    return readdirSync(NETNS_ETC_DIR).filter((name) => name.startsWith(prefix));
  } catch {
    return [];
  }
}
