// The node's bindings on disk: one JSON file, replaced atomically (write a temporary file,
// fsync it, rename it over the old one, fsync the directory), so a crash at any instant
// leaves either the old table or the new one, never a torn one. Saves are serialised.
import { mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import { canonicalIpv4 } from "../common/ipv4.js";
import type { HeldBinding } from "./binding-table.js";

const FILE = "bindings.json";
const FORMAT_VERSION = 1;

export class StateError extends Error {
  override name = "StateError";
}

export class BindingStore {
  readonly path: string;
  private saving: Promise<void> = Promise.resolve();

  constructor(readonly dir: string) {
    this.path = join(dir, FILE);
  }

  /** The saved bindings, or undefined when nothing was ever saved here. */
  async load(): Promise<HeldBinding[] | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    return parseStateFile(text, this.path);
  }

  save(bindings: readonly HeldBinding[]): Promise<void> {
    const next = this.saving.then(() => this.write(bindings));
    this.saving = next.catch(() => {});
    return next;
  }

  private async write(bindings: readonly HeldBinding[]): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const body = JSON.stringify({
      version: FORMAT_VERSION,
      bindings: bindings.map(({ eip, vmi, since }) => ({ eip, vmi, since })),
    });
    const tmp = `${this.path}.${process.pid}.tmp`;
    const file = await open(tmp, "w", 0o600);
    try {
      await file.writeFile(body);
      await file.sync();
    } finally {
      await file.close();
    }
    try {
      await rename(tmp, this.path);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
    const dir = await open(this.dir, "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

export function parseStateFile(text: string, where: string): HeldBinding[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new StateError(`${where} is not valid JSON; refusing to guess the node's bindings`, {
      cause: err,
    });
  }
  if (!isRecord(doc) || doc.version !== FORMAT_VERSION || !Array.isArray(doc.bindings)) {
    throw new StateError(`${where} is not a kube-eip state file of version ${FORMAT_VERSION}`);
  }
  const seenEip = new Set<string>();
  const seenVmi = new Set<string>();
  return doc.bindings.map((entry: unknown, i: number) => {
    const eip =
      isRecord(entry) && typeof entry.eip === "string" ? canonicalIpv4(entry.eip) : undefined;
    const vmi =
      isRecord(entry) && typeof entry.vmi === "string" ? canonicalIpv4(entry.vmi) : undefined;
    if (!isRecord(entry) || eip === undefined || vmi === undefined) {
      throw new StateError(`${where}: binding ${i} is not a pair of IPv4 addresses`);
    }
    if (seenEip.has(eip) || seenVmi.has(vmi)) {
      throw new StateError(`${where}: binding ${i} (${eip} -> ${vmi}) repeats an EIP or a VMI`);
    }
    seenEip.add(eip);
    seenVmi.add(vmi);
    const since = typeof entry.since === "string" ? entry.since : new Date(0).toISOString();
    return { eip, vmi, since };
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
