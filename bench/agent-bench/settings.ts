// The agent benchmark's settings: the presets and the command line.
import type { IptablesMode } from "../../src/kernel/iptables.js";

/** A dataplane under test: the nftables one keeps its one FORWARD rule on iptables-nft. */
export interface Variant {
  readonly mode: IptablesMode;
  readonly dataplane: "iptables" | "nftables";
}

export const VARIANTS: readonly Variant[] = [
  { mode: "nft", dataplane: "iptables" },
  { mode: "legacy", dataplane: "iptables" },
  { mode: "nft", dataplane: "nftables" },
];

/** "iptables-nft", "iptables-legacy" or "nftables". */
export function variantName(v: Variant): string {
  return v.dataplane === "nftables" ? "nftables" : `iptables-${v.mode}`;
}

export interface Settings {
  readonly quick: boolean;
  /** Held bindings for kube-eip. */
  readonly agentHeld: readonly number[];
  readonly seqSamples: number;
  readonly concBinds: number;
  readonly concurrency: number;
  readonly warmup: number;
  /** Held bindings for the baseline. */
  readonly baseHeld: readonly number[];
  readonly baseSeqSamples: number;
  readonly baseConcBinds: number;
  readonly baseSeqCapMs: number;
  readonly baseConcCapMs: number;
  readonly agentPhaseCapMs: number;
  readonly profileIterations: number;
  readonly resyncIntervalSec: number;
  /** Connection-rate rounds per EIP, their length and the client's parallel loops. */
  readonly connRounds: number;
  readonly connRoundMs: number;
  readonly connLoops: number;
  /** iperf3 rounds per path and their length (plus one omitted second). */
  readonly iperfRounds: number;
  readonly iperfSeconds: number;
  readonly backends: readonly Variant[];
  readonly skipBaseline: boolean;
  readonly jsonFile: string | undefined;
}

export const FULL = {
  agentHeld: [0, 1000, 10000],
  seqSamples: 200,
  concBinds: 1000,
  concurrency: 32,
  warmup: 5,
  baseHeld: [0, 1000],
  baseSeqSamples: 200,
  baseConcBinds: 1000,
  baseSeqCapMs: 60_000,
  baseConcCapMs: 90_000,
  agentPhaseCapMs: 180_000,
  profileIterations: 7,
  connRounds: 5,
  connRoundMs: 2000,
  connLoops: 4,
  iperfRounds: 2,
  iperfSeconds: 4,
};

export const QUICK = {
  agentHeld: [0, 100],
  seqSamples: 30,
  concBinds: 200,
  concurrency: 32,
  warmup: 3,
  baseHeld: [0, 100],
  baseSeqSamples: 20,
  baseConcBinds: 100,
  baseSeqCapMs: 10_000,
  baseConcCapMs: 10_000,
  agentPhaseCapMs: 30_000,
  profileIterations: 3,
  connRounds: 2,
  connRoundMs: 1500,
  connLoops: 4,
  iperfRounds: 1,
  iperfSeconds: 2,
};

export const USAGE =
  "usage: node dist/bench/agent-bench.js [--quick] [--json FILE] [--backend nft|legacy|nftables|both|all[,...]]\n" +
  "           [--resync-interval SECONDS] [--held N,N,...] [--phase-cap SECONDS] [--skip-baseline]\n" +
  "  --backend: the dataplanes, in this order (default all: nft, legacy, nftables); the baseline\n" +
  "             runs once per iptables backend (nftables shares iptables-nft's)\n" +
  "  --phase-cap: the time limit of each of kube-eip's load phases (default 180; --quick 30)\n" +
  "  --held: kube-eip's held-binding levels (default 0,1000,10000; --quick 0,100)\n" +
  "  --resync-interval: the agent's periodic re-read (default 10 s, the agent's default)\n";

export function parseSettings(argv: readonly string[]): Settings {
  let quick = false;
  let jsonFile: string | undefined;
  let backends: Variant[] = [...VARIANTS];
  let resync = 10; // the agent's default
  let held: number[] | undefined;
  let skipBaseline = false;
  let phaseCap: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value\n${USAGE}`);
      return v;
    };
    if (arg === "--quick") quick = true;
    else if (arg === "--json") jsonFile = value();
    else if (arg === "--backend") {
      // One name, or several separated by commas, run in the order given.
      const chosen: Record<string, readonly Variant[]> = {
        all: VARIANTS,
        both: VARIANTS.filter((x) => x.dataplane === "iptables"),
        nft: VARIANTS.slice(0, 1),
        legacy: VARIANTS.slice(1, 2),
        nftables: VARIANTS.slice(2),
      };
      const picked = value()
        .split(",")
        .map((name) => chosen[name]);
      if (picked.length === 0 || picked.some((p) => p === undefined)) {
        throw new Error(`--backend must be nft, legacy, nftables, both or all\n${USAGE}`);
      }
      backends = [...new Set(picked.flatMap((p) => p ?? []))];
    } else if (arg === "--phase-cap") {
      phaseCap = Number(value());
      if (!Number.isInteger(phaseCap) || phaseCap < 1) throw new Error("--phase-cap: seconds");
    } else if (arg === "--resync-interval") {
      resync = Number(value());
      if (!Number.isInteger(resync) || resync < 1) throw new Error("--resync-interval: seconds");
    } else if (arg === "--held") {
      held = value()
        .split(",")
        .map((x) => Number(x));
      if (!held.every((x) => Number.isInteger(x) && x >= 0 && x <= 60000)) {
        throw new Error("--held: a comma-separated list of whole numbers up to 60000");
      }
    } else if (arg === "--skip-baseline") {
      skipBaseline = true;
    } else if (arg === "--help" || arg === "-h") {
      process.stdout.write(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}\n${USAGE}`);
  }
  const preset = quick ? QUICK : FULL;
  return {
    quick,
    ...preset,
    agentHeld: held ?? preset.agentHeld,
    agentPhaseCapMs: phaseCap === undefined ? preset.agentPhaseCapMs : phaseCap * 1000,
    resyncIntervalSec: resync,
    backends,
    skipBaseline,
    jsonFile,
  };
}
