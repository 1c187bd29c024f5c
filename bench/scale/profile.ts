// Where the operator's CPU went: a V8 .cpuprofile (node --cpu-prof) summed by self time,
// per function and per source file, the biggest first.
import { readFileSync } from "node:fs";
import { round } from "../common.js";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface ProfileSummary {
  readonly totalMs: number;
  readonly byFunction: readonly (readonly [string, number])[];
  readonly byFile: readonly (readonly [string, number])[];
}

/** A file's path from node_modules or our dist on, or the whole URL. */
function shortUrl(url: string): string {
  const m = /(node_modules\/.*|dist\/.*)$/.exec(url);
  return m?.[1] ?? (url || "(native)");
}

export function summarizeProfile(file: string, top = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, k) => {
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[k] ?? 0) / 1000);
  });
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  let totalMs = 0;
  for (const [id, ms] of self) {
    const f = byId.get(id)?.callFrame;
    if (!f) continue;
    totalMs += ms;
    const where = shortUrl(f.url);
    const name = `${f.functionName || "(anonymous)"} ${where}${f.url ? `:${f.lineNumber + 1}` : ""}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + ms);
    byFile.set(where, (byFile.get(where) ?? 0) + ms);
  }
  const sorted = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => [k, round(v, 1)] as const);
  return { totalMs: round(totalMs, 1), byFunction: sorted(byFunction), byFile: sorted(byFile) };
}
