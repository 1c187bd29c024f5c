// The scale benchmark's command line.
export interface Settings {
  readonly bindings: number;
  readonly nodes: number;
  /** Processes the simulated agents are spread over. */
  readonly agentProcesses: number;
  /** The operator's --workers; undefined: its default. */
  readonly workers: number | undefined;
  /** Run the operator under node --cpu-prof and summarize the profile. */
  readonly profile: boolean;
  readonly modes: readonly ("named" | "pools")[];
  readonly readyTimeoutMs: number;
  readonly jsonFile: string | undefined;
}

const USAGE =
  "usage: node dist/bench/scale-bench.js [--bindings N] [--nodes M] [--agent-processes P] [--workers W] [--profile] [--only pools|named] [--json FILE]";

export function parseSettings(argv: readonly string[]): Settings {
  let bindings = 10_000;
  let nodes = 200;
  let agentProcesses = 4;
  let workers: number | undefined;
  let profile = false;
  let modes: Settings["modes"] = ["named", "pools"];
  let jsonFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const int = (min: number, max: number) => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < min || v > max) throw new Error(`${arg}: ${min} to ${max}`);
      return v;
    };
    if (arg === "--bindings") bindings = int(1, 16_000);
    else if (arg === "--nodes") nodes = int(1, 250);
    else if (arg === "--agent-processes") agentProcesses = int(1, 64);
    else if (arg === "--workers") workers = int(1, 256);
    else if (arg === "--profile") profile = true;
    else if (arg === "--only") {
      const m = argv[++i];
      if (m !== "pools" && m !== "named") throw new Error(`--only: pools or named\n${USAGE}`);
      modes = [m];
    } else if (arg === "--json") jsonFile = argv[++i];
    else throw new Error(USAGE);
  }
  return {
    bindings,
    nodes,
    agentProcesses: Math.min(agentProcesses, nodes),
    workers,
    profile,
    modes,
    readyTimeoutMs: Math.max(120_000, bindings * 60),
    jsonFile,
  };
}
