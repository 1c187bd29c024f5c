// Helpers of the end-to-end tests; running agents in lab nodes is src/lab/agents.ts.

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
