// A small client of the Kubernetes REST API for the lab's cluster: HTTPS with the admin client
// certificate (node:https, keep-alive connections), optionally through a Unix socket that
// relays to the apiserver (unix-relay.ts), so this process reaches an apiserver that listens
// inside a network namespace. For writing many objects fast (a request each, with bounded
// concurrency) without a kubectl process per object. Not the operator's client.
import { readFile } from "node:fs/promises";
import { Agent, request } from "node:https";

export interface KubeRestOptions {
  /** https://host:port: the apiserver's address (the certificate is checked against it). */
  readonly server: string;
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** Connect through this Unix socket (a relay to `server`) instead of over TCP. */
  readonly socketPath?: string;
  /** Connections kept open at most, default 32. */
  readonly maxSockets?: number;
  /** Per request, default 30 s. */
  readonly timeoutMs?: number;
}

/** A request the apiserver answered with an error status (the Status object's reason). */
export class KubeApiError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly reason: string,
    readonly body: string,
  ) {
    super(`${method} ${path}: ${status} ${reason}`);
    this.name = "KubeApiError";
  }
}

export const CONTENT = {
  json: "application/json",
  mergePatch: "application/merge-patch+json",
  strategicPatch: "application/strategic-merge-patch+json",
  /** Server-side apply (JSON is YAML); needs a fieldManager query parameter. */
  apply: "application/apply-patch+yaml",
} as const;

export interface RequestOptions {
  readonly contentType?: string;
  readonly query?: Readonly<Record<string, string>>;
}

export class KubeRest {
  private readonly agent: Agent;
  private readonly url: URL;

  private constructor(
    private readonly options: KubeRestOptions,
    tls: { ca: Buffer; cert: Buffer; key: Buffer },
  ) {
    this.url = new URL(options.server);
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: options.maxSockets ?? 32,
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
    });
  }

  static async create(options: KubeRestOptions): Promise<KubeRest> {
    const [ca, cert, key] = await Promise.all(
      [options.caFile, options.certFile, options.keyFile].map((f) => readFile(f)),
    );
    return new KubeRest(options, { ca: ca as Buffer, cert: cert as Buffer, key: key as Buffer });
  }

  /** Sends one request; resolves with the parsed JSON answer, rejects with KubeApiError. */
  request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    options: RequestOptions = {},
  ): Promise<T> {
    const query = options.query ? `?${new URLSearchParams(options.query).toString()}` : "";
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: CONTENT.json };
    if (payload !== undefined) {
      headers["content-type"] = options.contentType ?? CONTENT.json;
      headers["content-length"] = String(Buffer.byteLength(payload));
    }
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          agent: this.agent,
          method,
          host: this.url.hostname,
          port: this.url.port,
          socketPath: this.options.socketPath,
          path: `${path}${query}`,
          headers,
          timeout: this.options.timeoutMs ?? 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            const status = res.statusCode ?? 0;
            if (status < 200 || status > 299) {
              let reason = res.statusMessage ?? "";
              try {
                const parsed = JSON.parse(text) as { reason?: string; message?: string };
                reason = [parsed.reason, parsed.message].filter(Boolean).join(": ") || reason;
              } catch {
                // Not a Status object: keep the status line.
              }
              reject(new KubeApiError(method, path, status, reason, text));
              return;
            }
            try {
              resolve((text === "" ? undefined : JSON.parse(text)) as T);
            } catch (err) {
              reject(new Error(`${method} ${path}: answer is not JSON: ${String(err)}`));
            }
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  get<T = unknown>(path: string, query?: Record<string, string>): Promise<T> {
    return this.request<T>("GET", path, undefined, { query });
  }

  post<T = unknown>(path: string, body: unknown): Promise<T> {
    return this.request<T>("POST", path, body);
  }

  /** JSON merge patch (RFC 7386): null removes a field, arrays are replaced. */
  mergePatch<T = unknown>(path: string, patch: unknown): Promise<T> {
    return this.request<T>("PATCH", path, patch, { contentType: CONTENT.mergePatch });
  }

  delete<T = unknown>(path: string): Promise<T> {
    return this.request<T>("DELETE", path);
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }
}

/**
 * Runs `fn` over the items with at most `limit` at a time, results in order. On the first
 * failure no new item starts; it rejects with that failure once the running ones settled.
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (failure === undefined && next < items.length) {
      const index = next++;
      try {
        results[index] = await fn(items[index] as T, index);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure) throw failure.err;
  return results;
}
