import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { connect, type AddressInfo } from "node:net";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeCerts } from "../deploy/certs.js";
import { ExecRunner } from "../kernel/runner.js";
import { syncBuiltinESMExports } from "node:module";
import tls from "node:tls";
import { KubeClient, NODES } from "./client.js";

/**
 * An HTTPS stand-in apiserver (certificate for 127.0.0.1 from kube-eip-certs' code) behind a
 * tiny CONNECT proxy that wants Basic credentials and records what it saw.
 */
describe("KubeClient through an http:// proxy-url (CONNECT) to an HTTPS apiserver", () => {
  const dir = mkdtempSync(join(tmpdir(), "kube-proxy-test-"));
  let api: Server;
  let proxy: Server;
  let ca: Buffer;
  const tunnels: { target: string; auth: string }[] = [];
  const requests: string[] = [];
  const listen = async (s: Server) => {
    await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
    return (s.address() as AddressInfo).port;
  };
  let apiPort = 0;
  let proxyPort = 0;

  before(async () => {
    const files = await makeCerts(new ExecRunner({ timeoutMs: 60_000 }), {
      dir,
      nodes: [{ name: "api", ip: "127.0.0.1" }],
      days: 1,
    });
    const pki = files.nodes.get("api");
    assert.ok(pki);
    ca = readFileSync(files.agentCa.cert);
    api = createHttpsServer(
      { cert: readFileSync(pki.cert), key: readFileSync(pki.key) },
      (req, res) => {
        requests.push(`${req.method} ${req.url} ${req.headers.authorization ?? ""}`);
        res.writeHead(200, { "Content-Type": "application/json" }).end('{"kind":"Node"}');
      },
    );
    apiPort = await listen(api);
    proxy = createHttpServer((_req, res) => res.writeHead(405).end());
    proxy.on("connect", (req, socket, head) => {
      const auth = req.headers["proxy-authorization"] ?? "";
      tunnels.push({ target: req.url ?? "", auth });
      if (auth !== `Basic ${Buffer.from("me:s3cret").toString("base64")}`) {
        socket.end("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        return;
      }
      const [host, port] = (req.url ?? "").split(":");
      const upstream = connect(Number(port), host, () => {
        socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        upstream.write(head);
        upstream.pipe(socket).pipe(upstream);
      });
      upstream.on("error", () => socket.destroy());
      socket.on("error", () => upstream.destroy());
    });
    proxyPort = await listen(proxy);
  });

  after(async () => {
    for (const s of [api, proxy]) {
      s.closeAllConnections();
      await new Promise((resolve) => s.close(resolve));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test("requests go through the tunnel, TLS to the apiserver inside it", async () => {
    const client = new KubeClient(
      {
        server: `https://127.0.0.1:${apiPort}`,
        ca,
        token: () => "t0k",
        proxyUrl: `http://me:s3cret@127.0.0.1:${proxyPort}`,
      },
      { timeoutMs: 5000 },
    );
    try {
      tunnels.length = 0;
      requests.length = 0;
      assert.deepEqual(await client.get(NODES, undefined, "n1"), { kind: "Node" });
      await client.get(NODES, undefined, "n2");
      assert.deepEqual(requests, [
        "GET /api/v1/nodes/n1 Bearer t0k",
        "GET /api/v1/nodes/n2 Bearer t0k",
      ]);
      assert.equal(tunnels.length, 1, "one tunnel, kept alive for the second request");
      assert.equal(tunnels[0]?.target, `127.0.0.1:${apiPort}`);
    } finally {
      client.close();
    }
  });

  test("a proxy that refuses the tunnel: a clear error naming it; the certificate is still checked", async () => {
    const refused = new KubeClient(
      {
        server: `https://127.0.0.1:${apiPort}`,
        ca,
        proxyUrl: `http://me:wrong@127.0.0.1:${proxyPort}`,
      },
      { timeoutMs: 5000 },
    );
    const untrusted = new KubeClient(
      {
        server: `https://127.0.0.1:${apiPort}`,
        proxyUrl: `http://me:s3cret@127.0.0.1:${proxyPort}`,
      },
      { timeoutMs: 5000 },
    );
    try {
      requests.length = 0;
      await assert.rejects(
        refused.get(NODES, undefined, "n1"),
        new RegExp(`proxy 127.0.0.1:${proxyPort} refused CONNECT 127.0.0.1:${apiPort}: HTTP 407`),
      );
      await assert.rejects(
        untrusted.get(NODES, undefined, "n1"),
        /self-signed|unable to (verify|get)/,
      );
      assert.deepEqual(requests, [], "no request reached the apiserver");
    } finally {
      refused.close();
      untrusted.close();
    }
  });

  test("connections opened at once share one TLS context, made when the client is", async () => {
    const made = tls.createSecureContext;
    let contexts = 0;
    tls.createSecureContext = (options) => {
      contexts++;
      return made(options);
    };
    syncBuiltinESMExports();
    try {
      const client = new KubeClient(
        { server: `https://127.0.0.1:${apiPort}`, ca, token: () => "t" },
        { timeoutMs: 5000 },
      );
      try {
        requests.length = 0;
        await Promise.all(
          Array.from({ length: 8 }, (_, i) => client.get(NODES, undefined, `n${i}`)),
        );
        assert.equal(requests.length, 8);
        assert.equal(contexts, 1, "eight connections, one context");
      } finally {
        client.close();
      }
    } finally {
      tls.createSecureContext = made;
      syncBuiltinESMExports();
    }
  });
});
