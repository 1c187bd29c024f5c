// Labs of other processes: their state files (lab.json) and leftovers, found and removed by
// prefix (`kube-eip-lab down`, `cleanup`).

import { readFileSync, readdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { ExecRunner, type CommandRunner } from "../kernel/runner.js";
import {
  etcNetnsWithPrefix,
  listNamespaces,
  NETNS_ETC_DIR,
  processAlive,
  processStartTime,
  removeNamespaces,
} from "./netns.js";
import { checkPrefix } from "./topology.js";
import {
  DEFAULT_PREFIX_BASE,
  DEFAULT_RUN_ROOT,
  STATE_FILE,
  STATE_KIND,
  STATE_VERSION,
  type CleanupReport,
  type LabDescription,
} from "./lab-types.js";

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
