// The node's bindings on disk, in two files:
// - bindings.json, a snapshot of the whole table with a generation number, replaced
//   atomically (write a temporary file, fsync it, rename it over the old one, fsync the
//   directory), so a crash leaves either the old snapshot or the new one;
// - bindings.journal, one JSON line per change since that snapshot, each tagged with the
//   snapshot's generation, appended and fdatasynced before a request is answered.
// A change costs one small append, whatever the size of the table; when the journal grows
// past the table's size (and at every start) a new snapshot replaces both. Loading replays
// the lines of the snapshot's generation (older lines are leftovers of a compaction cut
// short by a crash); a torn last line was never acknowledged and is dropped.
// Writes are serialised.
//
// Loading never returns fewer bindings than were acknowledged: it refuses (StateError)
// instead, when a file cannot be read or parsed, when a line before the last is damaged,
// and when the journal exists without its snapshot (the journal only ever exists next to a
// snapshot: a compaction renames the snapshot into place before it empties the journal).
// Only a directory with neither file is a node with nothing saved.
import { mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import { canonicalIpv4 } from "../common/ipv4.js";
import type { Change, HeldBinding } from "./binding-table.js";

const SNAPSHOT = "bindings.json";
const JOURNAL = "bindings.journal";
const FORMAT_VERSION = 1;
const MIN_JOURNAL_LINES = 1024;

export class StateError extends Error {
  override name = "StateError";
}

export class BindingStore {
  readonly path: string;
  readonly journalPath: string;
  private generation = 0;
  private journalLines = 0;
  private writing: Promise<void> = Promise.resolve();

  constructor(readonly dir: string) {
    this.path = join(dir, SNAPSHOT);
    this.journalPath = join(dir, JOURNAL);
  }

  /** The saved bindings, or undefined when nothing was ever saved here. */
  async load(): Promise<HeldBinding[] | undefined> {
    const snapshotText = await readOptional(this.path);
    const journalText = await readOptional(this.journalPath);
    if (snapshotText === undefined && journalText === undefined) return undefined;
    if (snapshotText === undefined) {
      throw new StateError(
        `${this.journalPath} exists but ${this.path} is missing: the saved bindings are incomplete`,
      );
    }
    const snapshot = parseSnapshot(snapshotText, this.path);
    this.generation = snapshot.generation;
    const table = new Replay(snapshot.bindings);
    const lines = (journalText ?? "").split("\n");
    lines.forEach((line, i) => {
      if (line === "") return;
      const change = parseJournalLine(line);
      if (change === undefined) {
        // Only the last line can be torn (a crash mid-append, never acknowledged).
        if (i === lines.length - 1) return;
        throw new StateError(`${this.journalPath}: line ${i + 1} is damaged`);
      }
      if (change.g !== this.generation) return;
      table.apply(change);
      this.journalLines++;
    });
    return table.bindings();
  }

  /**
   * Renames the state files that exist to `<name>.lost-<stamp>` (kept for a person to look
   * at), so that a recovered table starts a fresh snapshot. Resolves to the new names.
   */
  async setAside(stamp: string): Promise<string[]> {
    const moved: string[] = [];
    for (const path of [this.path, this.journalPath]) {
      const to = `${path}.lost-${stamp}`;
      try {
        await rename(path, to);
        moved.push(to);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
    this.generation = 0;
    this.journalLines = 0;
    return moved;
  }

  /** Replaces the snapshot with this table and empties the journal. */
  save(bindings: readonly HeldBinding[]): Promise<void> {
    return this.serialise(() => this.compact(bindings));
  }

  /** Makes these changes durable: one append, or a new snapshot when the journal is long. */
  record(changes: readonly Change[], bindings: readonly HeldBinding[]): Promise<void> {
    return this.serialise(async () => {
      if (changes.length === 0) return;
      if (this.journalLines + changes.length > Math.max(MIN_JOURNAL_LINES, bindings.length)) {
        return this.compact(bindings);
      }
      await mkdir(this.dir, { recursive: true });
      const text = changes.map((c) => JSON.stringify({ g: this.generation, ...c }) + "\n").join("");
      const file = await open(this.journalPath, "a", 0o600);
      try {
        await file.writeFile(text);
        await file.datasync();
      } finally {
        await file.close();
      }
      this.journalLines += changes.length;
    });
  }

  private serialise(write: () => Promise<void>): Promise<void> {
    const next = this.writing.then(write);
    this.writing = next.catch(() => {});
    return next;
  }

  private async compact(bindings: readonly HeldBinding[]): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const generation = this.generation + 1;
    const body = JSON.stringify({
      version: FORMAT_VERSION,
      generation,
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
    await syncDir(this.dir);
    this.generation = generation;
    // From here the journal's lines are of an older generation and ignored; empty it.
    const journal = await open(this.journalPath, "w", 0o600);
    await journal.close();
    this.journalLines = 0;
  }
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new StateError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The table rebuilt from journal lines: the last change of an EIP or a VMI wins. */
class Replay {
  private readonly byEip = new Map<string, HeldBinding>();
  private readonly byVmi = new Map<string, HeldBinding>();

  constructor(initial: readonly HeldBinding[]) {
    for (const b of initial) this.put(b);
  }

  apply(change: Change): void {
    const atEip = this.byEip.get(change.eip);
    if (change.op === "unbind") {
      if (atEip?.vmi === change.vmi) this.remove(atEip);
      return;
    }
    if (atEip) this.remove(atEip);
    const atVmi = this.byVmi.get(change.vmi);
    if (atVmi) this.remove(atVmi);
    this.put({ eip: change.eip, vmi: change.vmi, since: change.since });
  }

  bindings(): HeldBinding[] {
    return [...this.byEip.values()];
  }

  private put(b: HeldBinding): void {
    this.byEip.set(b.eip, b);
    this.byVmi.set(b.vmi, b);
  }

  private remove(b: HeldBinding): void {
    this.byEip.delete(b.eip);
    this.byVmi.delete(b.vmi);
  }
}

function parseJournalLine(line: string): (Change & { g: number }) | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!isRecord(doc) || typeof doc.g !== "number") return undefined;
  const eip = typeof doc.eip === "string" ? canonicalIpv4(doc.eip) : undefined;
  const vmi = typeof doc.vmi === "string" ? canonicalIpv4(doc.vmi) : undefined;
  if (eip === undefined || vmi === undefined) return undefined;
  if (doc.op === "unbind") return { g: doc.g, op: "unbind", eip, vmi };
  if (doc.op === "bind" && typeof doc.since === "string") {
    return { g: doc.g, op: "bind", eip, vmi, since: doc.since };
  }
  return undefined;
}

function parseSnapshot(
  text: string,
  where: string,
): { generation: number; bindings: HeldBinding[] } {
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
  const generation = typeof doc.generation === "number" ? doc.generation : 0;
  const seenEip = new Set<string>();
  const seenVmi = new Set<string>();
  const bindings = doc.bindings.map((entry: unknown, i: number) => {
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
  return { generation, bindings };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
