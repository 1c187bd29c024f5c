// The announcer against a fake speaker: only differences are sent, only our paths are
// ever withdrawn, always by naming them, and a failure makes the next apply read again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { KernelError, Phase } from "../kernel/manager.js";
import { BgpAnnouncer, type PathApi } from "./announcer.js";
import type { LocalPath } from "./gobgp-api.js";

const NEXT_HOP = "172.16.0.11";

class FakeSpeaker implements PathApi {
  readonly paths = new Map<string, string>(); // prefix -> next hop
  readonly calls: string[] = [];
  failNext = false;
  private check(what: string) {
    this.calls.push(what);
    if (this.failNext) {
      this.failNext = false;
      throw new Error("connection refused");
    }
  }
  async addPath(prefix: string, nextHop: string) {
    this.check(`add ${prefix}`);
    this.paths.set(prefix, nextHop);
  }
  async addPaths(prefixes: readonly string[], nextHop: string) {
    this.check(`stream ${prefixes.length}`);
    for (const p of prefixes) this.paths.set(p, nextHop);
  }
  async deletePath(prefix: string, nextHop: string) {
    this.check(`delete ${prefix}`);
    assert.ok(prefix && nextHop, "a withdrawal always names its path");
    if (this.paths.get(prefix) === nextHop) this.paths.delete(prefix);
  }
  async listLocalPaths(): Promise<LocalPath[]> {
    this.check("list");
    return [...this.paths].map(([prefix, nextHop]) => ({ prefix, nextHop }));
  }
}

function setup() {
  const speaker = new FakeSpeaker();
  const announcer = new BgpAnnouncer(speaker, { nextHop: NEXT_HOP, eipCidr: "192.168.18.0/24" });
  return { speaker, announcer };
}

test("announces each EIP as /32 once; a second apply sends nothing", async () => {
  const { speaker, announcer } = setup();
  const held: readonly string[] = ["192.168.18.100", "192.168.18.101"];
  assert.equal(await announcer.announce(held, { reread: false }), 2);
  assert.deepEqual(speaker.calls, ["list", "add 192.168.18.100/32", "add 192.168.18.101/32"]);
  speaker.calls.length = 0;
  assert.equal(await announcer.announce(held, { reread: false }), 0);
  assert.deepEqual(speaker.calls, []);
  assert.equal(announcer.status().announced, 2);
});

test("withdraw() takes back only what is no longer desired and adds nothing", async () => {
  const { speaker, announcer } = setup();
  let held: readonly string[] = ["192.168.18.100", "192.168.18.101"];
  await announcer.announce(held, { reread: false });
  speaker.calls.length = 0;
  held = ["192.168.18.101", "192.168.18.102"];
  assert.equal(await announcer.withdraw(held, { reread: false }), 1);
  assert.deepEqual(speaker.calls, ["delete 192.168.18.100/32"]);
  assert.equal(await announcer.announce(held, { reread: false }), 1);
  assert.deepEqual([...speaker.paths.keys()].sort(), ["192.168.18.101/32", "192.168.18.102/32"]);
});

test("paths it does not own are never withdrawn", async () => {
  const { speaker, announcer } = setup();
  speaker.paths.set("10.0.0.0/8", NEXT_HOP); // outside the EIP network
  speaker.paths.set("192.168.18.0/24", NEXT_HOP); // not a /32
  speaker.paths.set("192.168.18.50/32", "172.16.0.99"); // another next hop
  speaker.paths.set("192.168.18.77/32", NEXT_HOP); // ours, no longer bound
  const held: readonly string[] = [];
  assert.equal(await announcer.announce(held, { reread: true }), 1);
  assert.deepEqual([...speaker.paths.keys()].sort(), [
    "10.0.0.0/8",
    "192.168.18.0/24",
    "192.168.18.50/32",
  ]);
});

test("many new EIPs at once go through one stream", async () => {
  const { speaker, announcer } = setup();
  const held: readonly string[] = Array.from({ length: 200 }, (_, i) => `192.168.18.${i + 1}`);
  assert.equal(await announcer.announce(held, { reread: false }), 200);
  assert.deepEqual(speaker.calls, ["list", "stream 200"]);
  assert.equal(speaker.paths.size, 200);
});

test("a failure is phase 5, and the next apply reads the speaker again", async () => {
  const { speaker, announcer } = setup();
  let held: readonly string[] = ["192.168.18.100"];
  await announcer.announce(held, { reread: false });
  held = ["192.168.18.100", "192.168.18.101"];
  speaker.failNext = true;
  await assert.rejects(
    announcer.announce(held, { reread: false }),
    (err: unknown) => err instanceof KernelError && err.phase === Phase.Bgp,
  );
  speaker.calls.length = 0;
  assert.equal(await announcer.announce(held, { reread: false }), 1);
  assert.deepEqual(speaker.calls, ["list", "add 192.168.18.101/32"]);
});

test("after invalidate() (a fresh speaker) everything is announced again", async () => {
  const { speaker, announcer } = setup();
  const held: readonly string[] = ["192.168.18.100"];
  await announcer.announce(held, { reread: false });
  speaker.paths.clear(); // gobgpd restarted: its paths are gone
  announcer.invalidate();
  assert.equal(await announcer.announce(held, { reread: false }), 1);
  assert.ok(speaker.paths.has("192.168.18.100/32"));
});
