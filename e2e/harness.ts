// Helpers of the end-to-end tests; running agents in lab nodes is src/lab/agents.ts.
import type { Lab } from "../src/lab/lab.js";

export const isRoot = process.getuid?.() === 0;
export const NEEDS_ROOT = isRoot
  ? false
  : "needs root: builds network namespaces and drives the real kernel tools";

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls until fn returns true or the time is up; returns whether it became true. */
export async function eventually(
  fn: () => Promise<boolean>,
  timeoutMs: number,
  stepMs = 100,
): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return true;
    if (Date.now() > end) return false;
    await sleep(stepMs);
  }
}

/**
 * What the who-am-I server at addr:port saw as our source address, asked from namespace
 * `fromNs`; undefined if it cannot be reached within 2 s.
 */
export function whoami(
  lab: Lab,
  fromNs: string,
  addr: string,
  port: number,
): Promise<string | undefined> {
  return lab.tcpRequest(fromNs, addr, port, { timeoutSec: 2 }).then(
    (s) => s.trim(),
    () => undefined,
  );
}
