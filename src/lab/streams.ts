// Long-lived TCP streams between lab namespaces (stream.ts at both ends), read back from
// the ends' output: has data kept flowing since a moment, how long was the longest stall,
// did anything go wrong (a reset, an error, a close).
import { fileURLToPath } from "node:url";
import type { Lab, LabProcess } from "./lab.js";

export const STREAM_SCRIPT = fileURLToPath(new URL("./stream.js", import.meta.url));

/** How often an end reports what it received (stream.ts's REPORT_MS). */
const REPORT_MS = 200;

export interface StreamSpec {
  /** Names the processes and their logs: stream-<name>-server, stream-<name>-client. */
  readonly name: string;
  readonly serverNs: string;
  readonly clientNs: string;
  /** Where the client connects (an EIP, say); the server listens on 0.0.0.0:port. */
  readonly address: string;
  readonly port: number;
  /** Between two lines each end sends, default 10 ms. */
  readonly intervalMs?: number;
}

interface EndReport {
  /** The last RX report's time (epoch ms), 0 before the first. */
  readonly lastRx: number;
  /** The gaps that ended after `since`, in ms. */
  readonly gaps: number[];
  /** ERROR, BADSEQ and CLOSED lines. */
  readonly problems: string[];
}

function readEnd(output: string, since: number): EndReport {
  let lastRx = 0;
  const gaps: number[] = [];
  const problems: string[] = [];
  for (const line of output.split("\n")) {
    const [kind, a, b] = line.trim().split(" ");
    if (kind === "RX") lastRx = Number(b);
    else if (kind === "GAP" && Number(b) > since) gaps.push(Number(a));
    else if (kind === "ERROR" || kind === "BADSEQ" || kind === "CLOSED") problems.push(line);
  }
  return { lastRx, gaps, problems };
}

export class TcpStream {
  constructor(
    readonly name: string,
    readonly server: LabProcess,
    readonly client: LabProcess,
  ) {}

  private ends(since: number): { server: EndReport; client: EndReport } {
    return {
      server: readEnd(this.server.output(), since),
      client: readEnd(this.client.output(), since),
    };
  }

  /** What went wrong at either end, ever: resets, errors, closes, lines out of order. */
  problems(): string[] {
    const { server, client } = this.ends(0);
    return [
      ...server.problems.map((p) => `server: ${p}`),
      ...client.problems.map((p) => `client: ${p}`),
    ];
  }

  /** The longest stall, either way, that ended after `since` (epoch ms); 0 if none. */
  longestStallMs(since: number): number {
    const { server, client } = this.ends(since);
    return Math.max(0, ...server.gaps, ...client.gaps);
  }

  /** Whether both ends have received lines after `after` (epoch ms). */
  flowingAfter(after: number): boolean {
    const { server, client } = this.ends(after);
    return server.lastRx > after + REPORT_MS && client.lastRx > after + REPORT_MS;
  }

  /**
   * Resolves once both ends have received lines after `after`; rejects after `timeoutMs`,
   * or at once when either end reports a problem.
   */
  async waitFlowing(after: number, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const problems = this.problems();
      if (problems.length > 0) {
        throw new Error(`stream ${this.name}: ${problems.join("; ")}`);
      }
      if (this.flowingAfter(after)) return;
      if (Date.now() > end) {
        throw new Error(`stream ${this.name}: no data both ways for ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(): Promise<void> {
    await Promise.all([this.client.stop(500), this.server.stop(500)]);
  }
}

/** Starts the server end, connects the client end, and waits until data flows both ways. */
export async function openStream(lab: Lab, spec: StreamSpec): Promise<TcpStream> {
  const interval = String(spec.intervalMs ?? 10);
  const server = await lab.spawnIn(
    spec.serverNs,
    [process.execPath, STREAM_SCRIPT, "serve", String(spec.port), interval],
    { name: `stream-${spec.name}-server`, waitFor: "LISTENING", timeoutMs: 10_000 },
  );
  let client: LabProcess;
  try {
    client = await lab.spawnIn(
      spec.clientNs,
      [process.execPath, STREAM_SCRIPT, "connect", spec.address, String(spec.port), interval],
      { name: `stream-${spec.name}-client`, waitFor: "CONNECTED", timeoutMs: 10_000 },
    );
  } catch (err) {
    await server.stop(500);
    throw err;
  }
  const stream = new TcpStream(spec.name, server, client);
  try {
    await stream.waitFlowing(Date.now());
  } catch (err) {
    await stream.stop();
    throw err;
  }
  return stream;
}
