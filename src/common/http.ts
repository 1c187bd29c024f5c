// The small HTTP endpoints the programs serve: Prometheus metrics and health probes.
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { Registry } from "prom-client";

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A handler serving `registry` on GET /metrics. */
export function metricsRoute(registry: Registry): Record<string, Handler> {
  return {
    "/metrics": (_req, res) => {
      registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    },
  };
}

/** A probe: 200 "ok" while `check` returns undefined, else 503 with the reason. */
export function probe(check: () => string | undefined): Handler {
  return (_req, res) => {
    const problem = check();
    if (problem === undefined) res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    else res.writeHead(503, { "content-type": "text/plain" }).end(`${problem}\n`);
  };
}

/**
 * Serves the routes (exact paths, any method) on "host:port" (an empty host: every
 * address); resolves to the server and the port it listens on.
 */
export async function serve(
  address: string,
  routes: Record<string, Handler>,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const route = routes[(req.url ?? "").split("?")[0] ?? ""];
    if (route) route(req, res);
    else res.writeHead(404).end();
  });
  const idx = address.lastIndexOf(":");
  const host = address.slice(0, idx) || "0.0.0.0";
  const port = Number(address.slice(idx + 1));
  const bound = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const addr = server.address();
      resolve(typeof addr === "object" && addr ? addr.port : port);
    });
  });
  return { server, port: bound };
}
