// Helpers of the tests of connections that survive (survive*.privileged.test.ts): the two
// streams through an EIP, an event run between them with its figures, the dataplane
// variants, and another build of the agent for an upgrade.
import assert from "node:assert/strict";
import { cp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Dataplane } from "../src/lab/agents.js";
import type { Lab } from "../src/lab/lab.js";
import { openStream, type TcpStream } from "../src/lab/streams.js";
import { sleep } from "./harness.js";

export const RUNS = [
  { mode: "nft", dataplane: "iptables" },
  { mode: "legacy", dataplane: "iptables" },
  { mode: "nft", dataplane: "nftables" },
] as const satisfies readonly { mode: "nft" | "legacy"; dataplane: Dataplane }[];

export const EIP = "192.168.18.100";
const INBOUND_PORT = 7000;
const OUTBOUND_PORT = 7001;

/** Inbound: the outside host to the EIP (the VMI serves); outbound: the VMI to the outside host. */
export async function eipStreams(lab: Lab, vmi: string): Promise<TcpStream[]> {
  const outside = lab.describe().outside;
  return [
    await openStream(lab, {
      name: "inbound",
      serverNs: lab.vmiNamespace(vmi),
      clientNs: outside.namespace,
      address: EIP,
      port: INBOUND_PORT,
    }),
    await openStream(lab, {
      name: "outbound",
      serverNs: outside.namespace,
      clientNs: lab.vmiNamespace(vmi),
      address: outside.address,
      port: OUTBOUND_PORT,
    }),
  ];
}

/** TCP segments retransmitted so far in a namespace (its TcpRetransSegs). */
async function retransmits(lab: Lab, ns: string): Promise<number> {
  const { stdout } = await lab.exec(ns, ["nstat", "-asz", "TcpRetransSegs"]);
  return Number(/TcpRetransSegs\s+(\d+)/.exec(stdout)?.[1] ?? 0);
}

export interface EventFigures {
  readonly event: string;
  /** Longest stall per stream, ms. */
  readonly stalls: Record<string, number>;
  /** Retransmitted segments at the outside host and in the VMI during the event. */
  readonly retransmits: number;
}

/**
 * Runs `event` under the streams, waits `settleMs` (so a repair or a resync after it is in
 * the window), then until both streams carry data both ways again (10 s at most), and
 * checks that neither was reset or closed. Resolves to the figures.
 */
export async function across(
  lab: Lab,
  vmi: string,
  streams: readonly TcpStream[],
  event: string,
  run: () => Promise<void>,
  settleMs = 1500,
): Promise<EventFigures> {
  const namespaces = [lab.describe().outside.namespace, lab.vmiNamespace(vmi)];
  const count = async () =>
    (await Promise.all(namespaces.map((ns) => retransmits(lab, ns)))).reduce((a, b) => a + b);
  const before = await count();
  const t0 = Date.now();
  await run();
  await sleep(settleMs);
  for (const s of streams) await s.waitFlowing(Date.now(), 10_000);
  assert.deepEqual(
    streams.flatMap((s) => s.problems()),
    [],
    `${event}: the streams were not reset`,
  );
  const figures = {
    event,
    stalls: Object.fromEntries(streams.map((s) => [s.name, s.longestStallMs(t0)])),
    retransmits: (await count()) - before,
  };
  const stalls = Object.entries(figures.stalls).map(([k, v]) => `${k} ${v} ms`);
  console.log(
    `# ${event}: longest stall ${stalls.join(", ")}; ${figures.retransmits} retransmitted segments`,
  );
  return figures;
}

const DIST = fileURLToPath(new URL("../", import.meta.url));
const REPO = join(DIST, "..");

/**
 * Another build of the agent, as an upgrade brings: a copy of dist/src and proto/ with its
 * own package.json (version `version`) and build-info (commit "upgrade"), inside dist/ so
 * that node_modules resolves. Resolves to its eip_agent.js; `remove` deletes the copy.
 */
export async function otherBuild(
  name: string,
  version: string,
): Promise<{ agent: string; remove: () => Promise<void> }> {
  const root = join(DIST, `.upgrade-${name}`);
  await rm(root, { recursive: true, force: true });
  await mkdir(join(root, "dist"), { recursive: true });
  await cp(join(DIST, "src"), join(root, "dist", "src"), { recursive: true });
  await cp(join(REPO, "proto"), join(root, "proto"), { recursive: true });
  const pkg = JSON.parse(await readFile(join(REPO, "package.json"), "utf8")) as object;
  await writeFile(join(root, "package.json"), JSON.stringify({ ...pkg, version }) + "\n");
  await writeFile(join(root, "dist", "src", "build-info.json"), '{"commit":"upgrade"}\n');
  return {
    agent: join(root, "dist", "src", "bin", "eip_agent.js"),
    remove: () => rm(root, { recursive: true, force: true }),
  };
}
