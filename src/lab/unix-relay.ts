// A TCP relay from a Unix socket to an address, run inside a lab namespace:
//
//   node unix-relay.js SOCKET HOST PORT
//
// A path-named Unix socket is reached through the file system, whatever the network
// namespace, so a process in the host's namespace (the tests) connects to SOCKET and talks to
// HOST:PORT as seen from the namespace the relay runs in (the apiserver on the router's
// management address). It relays bytes only: TLS, and so the client certificate, stays end
// to end. Prints LISTENING once the socket accepts; removes it on SIGTERM/SIGINT.
import { chmodSync, rmSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";

const [socketPath, host, portText] = process.argv.slice(2);
const port = Number(portText);
if (!socketPath || !host || !Number.isInteger(port) || port < 1 || port > 65535) {
  process.stderr.write("usage: unix-relay.js SOCKET HOST PORT\n");
  process.exit(2);
}

const open = new Set<Socket>();
const server = createServer((client) => {
  const upstream = connect({ host, port });
  open.add(client);
  open.add(upstream);
  const close = () => {
    client.destroy();
    upstream.destroy();
    open.delete(client);
    open.delete(upstream);
  };
  client.on("error", close).on("close", close);
  upstream.on("error", close).on("close", close);
  client.pipe(upstream);
  upstream.pipe(client);
});

rmSync(socketPath, { force: true });
server.listen(socketPath, () => {
  chmodSync(socketPath, 0o600);
  process.stdout.write(`LISTENING ${socketPath} -> ${host}:${port}\n`);
});
server.on("error", (err) => {
  process.stderr.write(`unix-relay: ${err.message}\n`);
  process.exit(1);
});

for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.on(sig, () => {
    server.close();
    for (const s of open) s.destroy();
    rmSync(socketPath, { force: true });
    process.exit(0);
  });
}
