// The client's connection pool, with the kubeconfig's TLS material, and through the cluster's
// proxy-url when it has one. Only http:// proxies: the client asks the proxy for a tunnel to
// the apiserver (CONNECT host:port, with Basic Proxy-Authorization from the URL's user and
// password) and speaks TLS to the apiserver inside it, so the proxy sees no request. SOCKS
// and https:// proxies are refused with a clear error when the kubeconfig is read.
import { Agent as HttpAgent, type ClientRequestArgs, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, type AgentOptions } from "node:https";
import type { Duplex } from "node:stream";
import { connect as tlsConnect, type ConnectionOptions, createSecureContext } from "node:tls";
import type { KubeConfig } from "./config.js";

/** How long the proxy has to open the tunnel. */
const CONNECT_TIMEOUT_MS = 30_000;

/** Throws unless url is an http:// proxy URL. */
export function checkProxyUrl(url: string, where: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`${where}: proxy-url ${url} is not a URL`);
  }
  if (u.protocol !== "http:") {
    throw new Error(
      `${where}: proxy-url ${u.protocol}// proxies are not supported (only http:// proxies)`,
    );
  }
}

export function kubeAgent(cfg: KubeConfig, secure: boolean): HttpAgent {
  // One TLS context for every connection: without it each new connection parses the CA,
  // the certificate and the key again (tls.connect makes a context per call), which a
  // burst of requests opening connections pays in full.
  const secureContext = secure
    ? createSecureContext({
        ...(cfg.ca !== undefined ? { ca: cfg.ca } : {}),
        ...(cfg.cert !== undefined ? { cert: cfg.cert } : {}),
        ...(cfg.key !== undefined ? { key: cfg.key } : {}),
      })
    : undefined;
  const tls: AgentOptions = {
    keepAlive: true,
    ...(secureContext ? { secureContext } : {}),
    ...(cfg.tlsServerName !== undefined ? { servername: cfg.tlsServerName } : {}),
    rejectUnauthorized: cfg.insecureSkipTlsVerify !== true,
  };
  if (cfg.proxyUrl === undefined) {
    return secure ? new HttpsAgent(tls) : new HttpAgent({ keepAlive: true });
  }
  const proxy = new URL(cfg.proxyUrl);
  return secure
    ? new TunnelAgent(proxy, tls, true)
    : new TunnelAgent(proxy, { keepAlive: true }, false);
}

/** An agent whose connections are tunnels through an http:// proxy (TLS inside when secure). */
class TunnelAgent extends HttpsAgent {
  constructor(
    private readonly proxy: URL,
    opts: AgentOptions,
    private readonly secure: boolean,
  ) {
    super(opts);
  }

  override createConnection(
    options: ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const done = callback ?? (() => undefined);
    const host = options.host ?? "localhost";
    const target = `${host.includes(":") ? `[${host}]` : host}:${options.port ?? (this.secure ? 443 : 80)}`;
    const headers: Record<string, string> = { Host: target };
    if (this.proxy.username !== "") {
      const user = `${decodeURIComponent(this.proxy.username)}:${decodeURIComponent(this.proxy.password)}`;
      headers["Proxy-Authorization"] = `Basic ${Buffer.from(user).toString("base64")}`;
    }
    const what = `proxy ${this.proxy.host}`;
    const req = httpRequest({
      host: this.proxy.hostname.replace(/^\[|\]$/g, ""),
      port: this.proxy.port || 80,
      method: "CONNECT",
      path: target,
      headers,
      agent: false,
      timeout: CONNECT_TIMEOUT_MS,
    });
    req.once("connect", (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        done(new Error(`${what} refused CONNECT ${target}: HTTP ${res.statusCode}`), socket);
        return;
      }
      if (!this.secure) return done(null, socket);
      done(null, tlsConnect({ ...(options as ConnectionOptions), socket }));
    });
    req.once("timeout", () =>
      req.destroy(new Error(`${what}: no tunnel within ${CONNECT_TIMEOUT_MS} ms`)),
    );
    req.once("error", (err) => done(new Error(`${what}: ${err.message}`), req.socket as Duplex));
    req.end();
    return undefined;
  }
}
