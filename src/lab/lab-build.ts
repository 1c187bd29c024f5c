// Building a lab's network: the namespaces, their sysctls, iptables rules and links from a
// topology plan (topology.ts), each phase in parallel; and the small helpers that go with it.

import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CommandError, type CommandRunner } from "../kernel/runner.js";
import { NETNS_ETC_DIR } from "./netns.js";
import type { buildPlan, IptablesMode } from "./topology.js";
import { DEFAULT_PREFIX_BASE, type IptablesModeOption } from "./lab-types.js";

export function defaultPrefix(): string {
  return `${DEFAULT_PREFIX_BASE}${randomBytes(3).toString("hex")}`;
}

export function resolveIptablesModes(
  option: IptablesModeOption | undefined,
  nodes: number,
): IptablesMode[] {
  const list = Array.from({ length: nodes }, (_, k) => k + 1);
  if (option === undefined) return list.map(() => "nft");
  if (option === "mixed") return list.map((i) => (i % 2 === 1 ? "legacy" : "nft"));
  if (option === "legacy" || option === "nft") return list.map(() => option);
  if (Array.isArray(option)) {
    const modes = option as readonly string[];
    if (modes.length !== nodes || !modes.every((m) => m === "legacy" || m === "nft")) {
      throw new Error(`iptablesModes: need ${nodes} entries of "legacy" or "nft"`);
    }
    return [...(modes as readonly IptablesMode[])];
  }
  throw new Error(`iptablesModes: ${JSON.stringify(option)} is not legacy, nft or mixed`);
}

/** Turns a failed `ip -batch` into an error naming the line that failed. */
function batchError(err: unknown, ns: string, lines: readonly string[]): Error {
  if (!(err instanceof CommandError)) return err instanceof Error ? err : new Error(String(err));
  const match = /Command failed -:(\d+)/.exec(err.stderr);
  const line = match ? lines[Number(match[1]) - 1] : undefined;
  const where = line === undefined ? "" : ` at "${line}"`;
  return new Error(`ip -n ${ns} -batch failed${where}: ${err.stderr.trim()}`, { cause: err });
}

/**
 * Like Promise.all, but waits for every promise to settle before rejecting with the first
 * failure, so nothing is still running when the caller starts tearing down.
 */
async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** Where iproute2 keeps rt_tables: /etc (Debian, older releases) or /usr (newer defaults). */
const IPROUTE2_DIRS = ["/etc/iproute2", "/usr/share/iproute2", "/usr/lib/iproute2"];
const DEFAULT_RT_TABLES = "255\tlocal\n254\tmain\n253\tdefault\n0\tunspec\n";

/** A namespace's own copy of the iproute2 configuration, for `ip netns exec` to bind-mount. */
async function makeNetnsIproute2(target: string): Promise<void> {
  const source = IPROUTE2_DIRS.find((dir) => existsSync(join(dir, "rt_tables")));
  if (source) {
    await cp(source, target, { recursive: true });
  } else {
    await mkdir(target, { recursive: true });
    await writeFile(join(target, "rt_tables"), DEFAULT_RT_TABLES);
  }
}

/** Runs `ip -n <ns> -batch -`; a failure names the line that failed. */
export async function ipBatch(
  runner: CommandRunner,
  ns: string,
  lines: readonly string[],
): Promise<void> {
  try {
    await runner.run("ip", ["-n", ns, "-batch", "-"], { input: lines.join("\n") + "\n" });
  } catch (err) {
    throw batchError(err, ns, lines);
  }
}

/**
 * Creates the plan's namespaces (and each node's own /etc/iproute2 under /etc/netns), sets
 * their sysctls, loads their iptables rules and creates their links.
 */
export async function buildNetwork(
  runner: CommandRunner,
  plan: ReturnType<typeof buildPlan>,
  nodeNamespaces: readonly string[],
): Promise<void> {
  await settleAll<unknown>([
    runner.run("ip", ["-batch", "-"], {
      input: plan.namespaces.map((ns) => `netns add ${ns}\n`).join(""),
    }),
    // Each node gets its own /etc/iproute2 (rt_tables) under `ip netns exec`.
    ...nodeNamespaces.map((ns) => makeNetnsIproute2(join(NETNS_ETC_DIR, ns, "iproute2"))),
  ]);
  // Sysctls before any link exists, so the namespaces' defaults apply to every link.
  await settleAll(
    [...plan.sysctls].map(([ns, settings]) =>
      runner.run("ip", ["netns", "exec", ns, "sysctl", "-q", "-e", "-w", ...settings]),
    ),
  );
  // iptables does not depend on links: it runs alongside the link phases.
  const iptables = settleAll(
    plan.iptables.map(({ ns, mode, input }) =>
      runner.run("ip", ["netns", "exec", ns, `iptables-${mode}-restore`, "-w", "5"], {
        input,
      }),
    ),
  );
  // Handles a rejection now (no unhandled-rejection report); `await iptables` rethrows it.
  const iptablesSettled = iptables.then(
    () => undefined,
    () => undefined,
  );
  try {
    for (const phase of plan.phases) {
      await settleAll(phase.map(({ ns, lines }) => ipBatch(runner, ns, lines)));
    }
  } finally {
    // Never leave a command running behind a failure: teardown follows.
    await iptablesSettled;
  }
  await iptables;
}
