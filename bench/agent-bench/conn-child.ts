// The connection-rate measure's two ends, run as children of the agent benchmark inside lab
// namespaces (`--conn-child serve PORT` in a VMI, `--conn-child connect ...` on the outside
// host). The client opens TCP connections from `loops` loops for `ms` milliseconds, each
// closed with a reset as soon as it is established (no TIME_WAIT, so the ephemeral ports
// never run out), and prints one JSON line: how many were set up, how many failed, and the
// median time from connect() to established.
import net from "node:net";
import { median, now, round } from "../common.js";

export interface ConnRound {
  readonly connections: number;
  readonly failures: number;
  readonly wallMs: number;
  readonly perSec: number;
  readonly connectP50Ms: number;
}

function serve(port: number): void {
  const server = net.createServer((socket) => {
    socket.on("error", () => {}); // the client resets every connection
  });
  server.listen({ port, backlog: 4096 }, () => process.stdout.write(`listening on ${port}\n`));
}

function connectOnce(host: string, port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const t = now();
    const socket = net.connect({ host, port });
    socket.setTimeout(2000);
    socket.once("connect", () => {
      const ms = now() - t;
      socket.resetAndDestroy();
      resolve(ms);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once("error", () => resolve(undefined));
  });
}

async function connectLoops(host: string, port: number, ms: number, loops: number) {
  const times: number[] = [];
  let failures = 0;
  const start = now();
  const deadline = start + ms;
  const loop = async () => {
    while (now() < deadline) {
      const t = await connectOnce(host, port);
      if (t === undefined) failures++;
      else times.push(t);
    }
  };
  await Promise.all(Array.from({ length: loops }, loop));
  const wallMs = now() - start;
  const out: ConnRound = {
    connections: times.length,
    failures,
    wallMs: round(wallMs),
    perSec: round(times.length / (wallMs / 1000)),
    connectP50Ms: round(median(times), 3),
  };
  process.stdout.write(JSON.stringify(out) + "\n");
}

export async function connChild(argv: readonly string[]): Promise<void> {
  const [what, ...rest] = argv;
  if (what === "serve" && rest.length === 1) return serve(Number(rest[0]));
  if (what === "connect" && rest.length === 4) {
    const [host, port, ms, loops] = rest as [string, string, string, string];
    return connectLoops(host, Number(port), Number(ms), Number(loops));
  }
  throw new Error("--conn-child serve PORT | connect HOST PORT MS LOOPS");
}
