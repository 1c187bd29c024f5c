// The BGP announcer (the Announcer contract of src/kernel/subsystem.ts; the other one is
// ARP's): keeps the speaker's announced paths equal to the node's bound EIPs, each as EIP/32
// with the node's address as next hop, origin IGP. Like the kernel managers it diffs what it
// is asked to hold against what it believes the speaker holds and sends only the
// difference, re-reading the speaker (ListPath) when asked, at the first apply and after a
// failure.
//
// Ours are the locally originated /32 paths inside --eip-cidr with our next hop: a path
// anyone else added to a shared speaker is never withdrawn, and every withdrawal names its
// path (gobgpd withdraws every local path on a DeletePath without one).
import { type Ipv4Net, netContains, parseIpv4, parseIpv4Net } from "../common/ipv4.js";
import { KernelError, Phase } from "../kernel/manager.js";
import type { Announcer, AnnouncerStatus } from "../kernel/subsystem.js";
import type { LocalPath } from "./gobgp-api.js";

/** The gobgpd API calls the announcer needs (GobgpClient; a fake in unit tests). */
export interface PathApi {
  addPath(prefix: string, nextHop: string): Promise<void>;
  addPaths(prefixes: readonly string[], nextHop: string): Promise<void>;
  deletePath(prefix: string, nextHop: string): Promise<void>;
  listLocalPaths(): Promise<LocalPath[]>;
}

export interface AnnouncerOptions {
  readonly nextHop: string;
  readonly eipCidr: string;
  /** Paths added or withdrawn at once with single calls; more go through one stream. */
  readonly concurrency?: number;
}

/** The EIPs announced, as the speaker listed them. */
export type AnnouncedSnapshot = ReadonlySet<string>;

/** Above this many new paths at once, one AddPathStream replaces single AddPath calls. */
const STREAM_THRESHOLD = 32;

export class BgpAnnouncer implements Announcer<AnnouncedSnapshot> {
  /** What the speaker holds of ours; undefined when unknown. */
  private announced: Set<string> | undefined;
  private readonly cidr: Ipv4Net;

  constructor(
    private readonly api: PathApi,
    private readonly opts: AnnouncerOptions,
  ) {
    const cidr = parseIpv4Net(opts.eipCidr);
    if (!cidr) throw new Error(`bad EIP CIDR ${opts.eipCidr}`);
    this.cidr = cidr;
  }

  /** Forgets what the speaker holds (it was replaced): the next apply re-reads it. */
  invalidate(): void {
    this.announced = undefined;
  }

  /** EIPs the speaker holds of ours, as far as the announcer knows. */
  status(): AnnouncerStatus {
    return { announced: this.announced?.size ?? 0 };
  }

  async read(): Promise<AnnouncedSnapshot> {
    try {
      const paths = await this.api.listLocalPaths();
      return new Set(paths.filter((p) => this.owns(p)).map((p) => p.prefix.slice(0, -3)));
    } catch (err) {
      throw new KernelError(Phase.Bgp, `reading the BGP speaker's paths: ${message(err)}`, {
        cause: err,
      });
    }
  }

  adopt(snapshot: AnnouncedSnapshot): void {
    this.announced = new Set(snapshot);
  }

  /** Withdraws what is announced but not in `held`; nothing is announced. */
  async withdraw(held: readonly string[], options: { reread: boolean }): Promise<number> {
    if (options.reread || !this.announced) this.adopt(await this.read());
    const keep = new Set(held);
    return this.send(
      [],
      [...this.announcedSet()].filter((eip) => !keep.has(eip)),
    );
  }

  /** Announces `held`, withdrawing what else is announced. */
  async announce(held: readonly string[], options: { reread: boolean }): Promise<number> {
    if (options.reread || !this.announced) this.adopt(await this.read());
    const announced = this.announcedSet();
    const keep = new Set(held);
    const add = held.filter((eip) => !announced.has(eip));
    const remove = [...announced].filter((eip) => !keep.has(eip));
    return this.send(add, remove);
  }

  private announcedSet(): Set<string> {
    if (!this.announced) throw new Error("unreachable: belief read before use");
    return this.announced;
  }

  private async send(add: readonly string[], remove: readonly string[]): Promise<number> {
    if (add.length === 0 && remove.length === 0) return 0;
    const announced = this.announcedSet();
    const { nextHop } = this.opts;
    try {
      await this.forEach(remove, async (eip) => {
        await this.api.deletePath(`${eip}/32`, nextHop);
        announced.delete(eip);
      });
      if (add.length > STREAM_THRESHOLD) {
        await this.api.addPaths(
          add.map((eip) => `${eip}/32`),
          nextHop,
        );
        for (const eip of add) announced.add(eip);
      } else {
        await this.forEach(add, async (eip) => {
          await this.api.addPath(`${eip}/32`, nextHop);
          announced.add(eip);
        });
      }
    } catch (err) {
      // A stream may have carried part of its paths: read the speaker again next time.
      this.announced = undefined;
      throw new KernelError(Phase.Bgp, `announcing EIPs to the BGP speaker: ${message(err)}`, {
        cause: err,
      });
    }
    return add.length + remove.length;
  }

  private async forEach(items: readonly string[], fn: (item: string) => Promise<void>) {
    const limit = this.opts.concurrency ?? 16;
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const item = items[next++] as string;
        await fn(item);
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  }

  private owns(path: LocalPath): boolean {
    if (path.nextHop !== this.opts.nextHop || !path.prefix.endsWith("/32")) return false;
    const addr = parseIpv4(path.prefix.slice(0, -3));
    return addr !== undefined && netContains(this.cidr, addr);
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
