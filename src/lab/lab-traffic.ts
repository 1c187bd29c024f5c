// Traffic from a lab namespace: ping, arping, and requests to the who-are-you server
// (whoami.ts) over TCP and UDP. Each runs a short command through the lab's exec.

import { CommandError, type RunResult } from "../kernel/runner.js";
import { WHOAMI_SCRIPT, type PingOptions, type PingResult } from "./lab-types.js";

/** Runs a command in a lab namespace (Lab.exec). */
export type LabExec = (ns: string, argv: readonly string[]) => Promise<RunResult>;

/** Pings from a lab namespace. Never rejects for lost packets or unreachable networks. */
export async function ping(
  exec: LabExec,
  fromNs: string,
  address: string,
  options: PingOptions = {},
): Promise<PingResult> {
  const count = options.count ?? 1;
  const args = ["ping", "-n", "-q", "-c", String(count), "-W", String(options.timeoutSec ?? 1)];
  if (count > 1) args.push("-i", String(options.intervalSec ?? 0.1));
  args.push(address);
  try {
    const { stdout } = await exec(fromNs, args);
    const match = /(\d+) packets transmitted, (\d+) received/.exec(stdout);
    const sent = match ? Number(match[1]) : count;
    const received = match ? Number(match[2]) : 0;
    return { sent, received, loss: sent === 0 ? 1 : 1 - received / sent, replied: received > 0 };
  } catch (err) {
    // Exit 1: no reply at all. Exit 2 with "unreachable": no route from here.
    if (
      err instanceof CommandError &&
      (err.exitCode === 1 || (err.exitCode === 2 && /unreachable/i.test(err.stderr)))
    ) {
      return { sent: count, received: 0, loss: 1, replied: false };
    }
    throw err;
  }
}

/**
 * Asks who has `address` with broadcast ARP requests (iputils arping) from a device of a
 * lab namespace, for `timeoutSec` (default 1) seconds; `source` is the sender address
 * (needed for targets the namespace has no route to). Resolves to the MAC addresses that
 * answered, lowercase, each once, in order; [] when nothing answered.
 */
export async function arping(
  exec: LabExec,
  fromNs: string,
  device: string,
  address: string,
  options: { source: string; timeoutSec?: number },
): Promise<string[]> {
  const timeout = String(options.timeoutSec ?? 1);
  const args = ["arping", "-b", "-w", timeout, "-I", device, "-s", options.source, address];
  try {
    const { stdout } = await exec(fromNs, args);
    const macs = [...stdout.matchAll(/reply from \S+ \[([0-9A-Fa-f:]{17})\]/g)];
    return [...new Set(macs.map((m) => (m[1] ?? "").toLowerCase()))];
  } catch (err) {
    // Exit 1: nothing answered.
    if (err instanceof CommandError && err.exitCode === 1) return [];
    throw err;
  }
}

/**
 * Connects from a lab namespace and returns what the server answered (the who-are-you
 * server: the source address it saw). Rejects when nothing answers.
 */
export async function tcpRequest(
  exec: LabExec,
  fromNs: string,
  address: string,
  port: number,
  options: { timeoutSec?: number } = {},
): Promise<string> {
  const timeout = String(options.timeoutSec ?? 2);
  let stdout: string;
  try {
    ({ stdout } = await exec(fromNs, ["nc", "-n", "-w", timeout, address, String(port)]));
  } catch (err) {
    const detail = err instanceof CommandError ? err.stderr.trim() : String(err);
    throw new Error(
      `tcp ${fromNs} -> ${address}:${port}: no answer (refused, unreachable or timed out)${detail ? `: ${detail}` : ""}`,
      { cause: err },
    );
  }
  const answer = stdout.trim();
  if (answer === "") throw new Error(`tcp ${fromNs} -> ${address}:${port}: empty answer`);
  return answer;
}

/** The UDP equivalent of tcpRequest (the who-are-you server answers UDP as well). */
export async function udpRequest(
  exec: LabExec,
  fromNs: string,
  address: string,
  port: number,
  options: { timeoutMs?: number } = {},
): Promise<string> {
  const timeout = String(options.timeoutMs ?? 2000);
  try {
    const { stdout } = await exec(fromNs, [
      process.execPath,
      WHOAMI_SCRIPT,
      "udp",
      address,
      String(port),
      timeout,
    ]);
    return stdout.trim();
  } catch (err) {
    const detail = err instanceof CommandError ? err.stderr.trim() : String(err);
    throw new Error(`udp ${fromNs} -> ${address}:${port}: ${detail}`, { cause: err });
  }
}
