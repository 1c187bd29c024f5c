// A long-lived TCP stream, both ways, for the tests of connections that survive agent
// restarts, drift repairs and migrations (e2e/survive). Run inside lab namespaces with
// `ip netns exec NS node stream.js ...`:
//
//   stream.js serve PORT [MS]          accepts connections on 0.0.0.0:PORT, prints LISTENING
//   stream.js connect ADDR PORT [MS]   connects, prints CONNECTED
//
// On a connection both ends send a numbered line every MS ms (default 10) and read the
// other's, checking the numbers follow on. Each end prints:
//
//   RX <count> <epoch ms>      at most every 200 ms, when lines arrived since the last RX
//   GAP <ms> <epoch ms>        a line arrived more than 50 ms after the one before it: how
//                              long the stall was and when it ended
//   ERROR <code>               the connection failed (ECONNRESET: it was reset)
//   BADSEQ <expected> <got>    a line out of order (never over TCP: a sign of a new stream)
//   CLOSED                     the peer closed the connection
//
// A server prints the same for each connection it accepts (there is one in these tests).

import { connect, createServer, type Socket } from "node:net";

const REPORT_MS = 200;
const GAP_MS = 50;

function parsePort(text: string | undefined): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    process.stderr.write(`stream: bad port ${String(text)}\n`);
    process.exit(2);
  }
  return port;
}

function parseInterval(text: string | undefined): number {
  const ms = Number(text ?? 10);
  return Number.isInteger(ms) && ms >= 1 && ms <= 1000 ? ms : 10;
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Sends and checks lines on a connected socket until it ends. */
function run(socket: Socket, intervalMs: number): void {
  socket.setNoDelay(true);
  let sent = 0;
  let received = 0;
  let reported = 0;
  let last = Date.now();
  let buffered = "";
  const send = setInterval(() => {
    socket.write(`${++sent}\n`);
  }, intervalMs);
  const report = setInterval(() => {
    if (received === reported) return;
    reported = received;
    say(`RX ${received} ${Date.now()}`);
  }, REPORT_MS);
  const end = () => {
    clearInterval(send);
    clearInterval(report);
  };
  socket.on("data", (chunk: Buffer) => {
    const now = Date.now();
    if (now - last > GAP_MS) say(`GAP ${now - last} ${now}`);
    last = now;
    buffered += chunk.toString("utf8");
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) {
      const got = Number(line);
      if (got !== received + 1) say(`BADSEQ ${received + 1} ${line}`);
      received = got;
    }
  });
  socket.on("error", (err: NodeJS.ErrnoException) => {
    say(`ERROR ${err.code ?? err.message}`);
    end();
  });
  socket.on("end", () => {
    say("CLOSED");
    end();
    socket.end();
  });
  socket.on("close", end);
}

function serve(port: number, intervalMs: number): void {
  const server = createServer((socket) => run(socket, intervalMs));
  server.on("error", (err) => {
    process.stderr.write(`stream: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(port, "0.0.0.0", () => say("LISTENING"));
}

function open(address: string, port: number, intervalMs: number): void {
  const socket = connect({ host: address, port }, () => {
    say("CONNECTED");
    run(socket, intervalMs);
  });
  socket.once("error", (err: NodeJS.ErrnoException) => {
    if (socket.connecting) {
      process.stderr.write(`stream: ${address}:${port}: ${err.code ?? err.message}\n`);
      process.exit(1);
    }
  });
}

const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
const [mode, ...rest] = process.argv.slice(2);
if (mode === "serve") {
  serve(parsePort(rest[0]), parseInterval(rest[1]));
} else if (mode === "connect" && rest[0]) {
  open(rest[0], parsePort(rest[1]), parseInterval(rest[2]));
} else {
  process.stderr.write("usage: stream.js serve PORT [MS] | stream.js connect ADDR PORT [MS]\n");
  process.exit(2);
}
