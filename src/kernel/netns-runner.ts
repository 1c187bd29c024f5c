// A CommandRunner that runs every command inside a named network namespace, by prefixing
// it with `ip netns exec <ns>` (still an argument array: no shell is involved). The kernel
// managers take any CommandRunner, so wrapping the real one in a NetnsRunner points a whole
// agent at a throwaway namespace: this is how the privileged tests and the lab work without
// ever touching the host's own network namespace.
//
// Also here: creating and deleting such namespaces, with names that cannot collide.
import { randomBytes } from "node:crypto";
import type { CommandRunner, RunOptions, RunResult } from "./runner.js";

/** Namespace names we create for tests carry this prefix, so strays are easy to spot. */
export const TEST_NETNS_PREFIX = "keip-t-";

export class NetnsRunner implements CommandRunner {
  constructor(
    private readonly inner: CommandRunner,
    readonly netns: string,
  ) {
    if (!/^[A-Za-z0-9_.-]+$/.test(netns) || netns.length > 64) {
      throw new Error(`invalid network namespace name ${JSON.stringify(netns)}`);
    }
  }

  run(command: string, args: readonly string[], options?: RunOptions): Promise<RunResult> {
    return this.inner.run("ip", ["netns", "exec", this.netns, command, ...args], options);
  }
}

/** A fresh, unique namespace name: `keip-t-` (or `prefix`) followed by 12 random hex digits. */
export function uniqueNetnsName(prefix: string = TEST_NETNS_PREFIX): string {
  return `${prefix}${randomBytes(6).toString("hex")}`;
}

/**
 * Creates a network namespace (with its loopback up) and returns a runner for it. The caller
 * must call deleteNetns() in a finally/after hook.
 */
export async function createNetns(
  runner: CommandRunner,
  name: string = uniqueNetnsName(),
): Promise<NetnsRunner> {
  await runner.run("ip", ["netns", "add", name]);
  const ns = new NetnsRunner(runner, name);
  try {
    await runner.run("ip", ["-n", name, "link", "set", "lo", "up"]);
  } catch (err) {
    await deleteNetns(runner, name);
    throw err;
  }
  return ns;
}

/** Deletes a namespace; a namespace that is already gone is not an error. */
export async function deleteNetns(runner: CommandRunner, name: string): Promise<void> {
  try {
    await runner.run("ip", ["netns", "del", name]);
  } catch (err) {
    const { stdout } = await runner.run("ip", ["netns", "list"]);
    const present = stdout.split("\n").some((line) => line.split(" ")[0] === name);
    if (present) throw err;
  }
}

/**
 * Adds an up, otherwise unused link named `name` inside `netns` to stand for a gateway device:
 * a dummy device, or where the kernel has no dummy driver, one end of a veth pair (the peer,
 * `<name>-peer`, is put up too so that the link has carrier).
 */
export async function addStandInDevice(
  runner: CommandRunner,
  netns: string,
  name: string,
): Promise<"dummy" | "veth"> {
  let kind: "dummy" | "veth" = "dummy";
  try {
    await runner.run("ip", ["-n", netns, "link", "add", name, "type", "dummy"]);
  } catch {
    kind = "veth";
    const peer = `${name}-peer`.slice(0, 15);
    await runner.run("ip", [
      "-n",
      netns,
      "link",
      "add",
      name,
      "type",
      "veth",
      "peer",
      "name",
      peer,
    ]);
    await runner.run("ip", ["-n", netns, "link", "set", peer, "up"]);
  }
  await runner.run("ip", ["-n", netns, "link", "set", name, "up"]);
  return kind;
}
