// SysctlManager: the kernel settings named in the desired state (the gateway device's
// arp_ignore and, with --arp-poisoning, proxy_delay; see gatewaySysctls in plan.ts).
//
// What it owns: the value of each named setting, nothing else; it never puts back the value
// a setting had before. A setting that is not named is never read or written.
//
// How it reads: one `sysctl -n KEY...` call (values come back one a line, in order). How it
// writes: one `sysctl -w KEY=VALUE...` call with the settings that differ. Both run through
// the CommandRunner, so they act in the network namespace the agent runs in (in the lab and
// the tests, the node's namespace; never the host's). Keys are in the slash form, where a
// device name may contain dots.
//
// With `procSysDir` (--proc-sys) it reads and writes the files `<procSysDir>/<key>` itself
// instead. SysctlWriter does both, and is the only way the agent touches a kernel setting
// (RouteManager's promote_secondaries uses it too), so --proc-sys holds for every one. A container without privileges has a read-only /proc/sys; the node's
// /proc/sys/net, mounted from the host at `<procSysDir>/net`, is writable. The files of
// /proc/sys/net belong to the network namespace of the process that opens them, so this
// mode acts in the agent's own namespace (a hostNetwork pod's: the node's).
//
// Belief: after a successful write the manager believes the settings hold their values and
// reads again only when asked (reread), when a setting it never read is named, or after a
// failure. A handful of settings: no incremental bookkeeping is needed.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { SysctlSpec } from "../model/desired.js";
import { KernelError, Phase, type KernelManager } from "./manager.js";
import type { CommandRunner } from "./runner.js";

/** The values read, by key. */
export type SysctlSnapshot = ReadonlyMap<string, string>;

const KEY = /^[a-z0-9_]+(\/[A-Za-z0-9_.:@-]+)+$/;

/** A key in the slash form, none of whose parts walks the tree (a key is also a path). */
function validKey(key: string): boolean {
  return KEY.test(key) && key.split("/").every((part) => part !== "." && part !== "..");
}
const VALUE = /^[^\s=]+$/;

/**
 * Reads and writes kernel settings: through `sysctl` run by the runner, or, with
 * `procSysDir`, as the files `<procSysDir>/<key>` (see the header). Refuses a key that is
 * not in the slash form or that walks the tree (a key is also a path).
 */
export class SysctlWriter {
  constructor(
    private readonly runner: CommandRunner,
    private readonly options: { readonly procSysDir?: string } = {},
  ) {}

  /** The values of `keys`, in order. */
  async read(keys: readonly string[]): Promise<string[]> {
    checkKeys(keys);
    const dir = this.options.procSysDir;
    if (dir !== undefined) {
      return Promise.all(keys.map(async (key) => (await readFile(join(dir, key), "utf8")).trim()));
    }
    const { stdout } = await this.runner.run("sysctl", ["-n", ...keys]);
    return stdout.split("\n").map((line) => line.trim());
  }

  async write(settings: readonly SysctlSpec[]): Promise<void> {
    checkKeys(settings.map((s) => s.key));
    const dir = this.options.procSysDir;
    if (dir === undefined) {
      await this.runner.run("sysctl", ["-w", ...settings.map((s) => `${s.key}=${s.value}`)]);
      return;
    }
    for (const s of settings) await writeFile(join(dir, s.key), `${s.value}\n`);
  }
}

function checkKeys(keys: readonly string[]): void {
  const bad = keys.find((key) => !validKey(key));
  if (bad !== undefined) throw new Error(`invalid sysctl key ${JSON.stringify(bad)}`);
}

export class SysctlManager implements KernelManager<readonly SysctlSpec[], SysctlSnapshot> {
  private desired: readonly SysctlSpec[] = [];
  private belief: Map<string, string> | undefined;

  constructor(private readonly writer: SysctlWriter) {}

  setDesired(desired: readonly SysctlSpec[]): void {
    this.desired = desired;
  }

  async apply(options: { reread: boolean }): Promise<number> {
    const desired = this.desired;
    for (const { key, value } of desired) {
      if (!validKey(key) || !VALUE.test(value)) {
        throw new KernelError(Phase.Address, `invalid sysctl ${JSON.stringify(`${key}=${value}`)}`);
      }
    }
    let belief = this.belief;
    // Forgotten until the end: a failed read or write leaves the kernel's values unknown.
    this.belief = undefined;
    if (options.reread || belief === undefined || desired.some((s) => !belief?.has(s.key))) {
      belief = new Map(await this.read());
    }
    const changes = desired.filter((s) => belief.get(s.key) !== s.value);
    if (changes.length > 0) {
      try {
        await this.writer.write(changes);
      } catch (err) {
        throw new KernelError(Phase.Address, `sysctl: ${errorMessage(err)}`, { cause: err });
      }
      for (const s of changes) belief.set(s.key, s.value);
    }
    this.belief = belief;
    return changes.length;
  }

  async read(): Promise<SysctlSnapshot> {
    const keys = this.desired.map((s) => s.key).filter(validKey);
    if (keys.length === 0) return new Map();
    let values: string[];
    try {
      values = await this.writer.read(keys);
    } catch (err) {
      throw new KernelError(Phase.Address, `sysctl: ${errorMessage(err)}`, { cause: err });
    }
    return new Map(keys.map((key, i) => [key, values[i] ?? ""]));
  }

  adopt(snapshot: SysctlSnapshot): void {
    this.belief = new Map(snapshot);
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
