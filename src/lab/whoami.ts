// A tiny "who are you" server and UDP client, run inside lab namespaces with
// `ip netns exec NS node whoami.js ...`:
//
//   whoami.js serve PORT          TCP and UDP on 0.0.0.0:PORT; answers every connection or
//                                 datagram with the peer's address as the server sees it
//                                 (one line), prints "LISTENING" once both are bound.
//   whoami.js udp ADDR PORT [MS]  sends one datagram, prints the answer; exit 1 on timeout.
//
// Tests use it to see which source address a packet carried after NAT.

import { createSocket } from "node:dgram";
import { createServer } from "node:net";

function parsePort(text: string | undefined): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    process.stderr.write(`whoami: bad port ${String(text)}\n`);
    process.exit(2);
  }
  return port;
}

function serve(port: number): void {
  const tcp = createServer((socket) => {
    socket.on("error", () => {});
    socket.end(`${socket.remoteAddress ?? "?"}\n`);
  });
  const udp = createSocket("udp4");
  udp.on("message", (_msg, rinfo) => {
    udp.send(`${rinfo.address}\n`, rinfo.port, rinfo.address);
  });
  let bound = 0;
  const ready = () => {
    bound += 1;
    if (bound === 2) process.stdout.write("LISTENING\n");
  };
  tcp.on("error", (err) => {
    process.stderr.write(`whoami: tcp: ${err.message}\n`);
    process.exit(1);
  });
  udp.on("error", (err) => {
    process.stderr.write(`whoami: udp: ${err.message}\n`);
    process.exit(1);
  });
  tcp.listen(port, "0.0.0.0", ready);
  udp.bind(port, "0.0.0.0", ready);
  const stop = () => process.exit(0);
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

function udpRequest(address: string, port: number, timeoutMs: number): void {
  const socket = createSocket("udp4");
  const timer = setTimeout(() => {
    process.stderr.write(`whoami: no answer from ${address}:${port} in ${timeoutMs} ms\n`);
    process.exit(1);
  }, timeoutMs);
  socket.on("message", (msg) => {
    clearTimeout(timer);
    process.stdout.write(msg.toString("utf8"));
    socket.close();
  });
  socket.on("error", (err) => {
    process.stderr.write(`whoami: ${err.message}\n`);
    process.exit(1);
  });
  socket.send("?\n", port, address);
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === "serve") {
  serve(parsePort(rest[0]));
} else if (mode === "udp" && rest[0]) {
  udpRequest(rest[0], parsePort(rest[1]), Number(rest[2] ?? 2000) || 2000);
} else {
  process.stderr.write("usage: whoami.js serve PORT | whoami.js udp ADDR PORT [TIMEOUT_MS]\n");
  process.exit(2);
}
