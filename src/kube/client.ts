// A small Kubernetes API client: the verbs the eip-operator needs (get, list, create,
// replace, patch, delete, watch) on the resources it names, JSON over HTTP/1.1 with node:https.
//
// One keep-alive agent per client carries every request, with the kubeconfig's TLS material;
// the bearer token is asked for at each request, so a rotated token is picked up. Failures
// the apiserver answers are KubeApiErrors built from its Status object (status code, reason,
// details), which the helpers of api-error.ts classify; failures on the way (refused,
// reset, timed out) are the errors Node gives. A list follows `continue` pages to the end. A
// watch parses the newline-delimited JSON stream whatever the chunking (watch-decoder.ts),
// hands each event to the caller as it arrives, turns an ERROR event (e.g. 410 Expired) into
// a rejected KubeApiError, and resolves when the server ends the stream or the caller
// aborts. Nothing here retries: that is the informer's, the leader elector's and the work
// queue's job. The resources it names and their paths are resources.ts's; all of it is
// exported from here.
import { type Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import type { KubeConfig } from "./config.js";
import { KubeApiError, isGone, isRecord } from "./api-error.js";
import { kubeAgent } from "./proxy.js";
import { type ResourceRef, resourcePath } from "./resources.js";
import { type WatchEventType, WatchDecoder, parseWatchLine } from "./watch-decoder.js";

export { KubeApiError, isAlreadyExists, isConflict, isGone, isNotFound } from "./api-error.js";
export * from "./resources.js";
export * from "./watch-decoder.js";

/**
 * A time as the apiserver's MicroTime wants it (RFC 3339 with exactly six fractional digits;
 * it refuses Date.toISOString()'s three), for Leases and Events.
 */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** Per-call options of every verb. */
export interface RequestOptions {
  /** Aborts the request (the call rejects with the signal's reason). */
  readonly signal?: AbortSignal;
}

export interface ListOptions {
  readonly namespace?: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** Page size; every page is fetched. */
  readonly limit?: number;
  /** Start from this continue token. */
  readonly continue?: string;
}

export interface ListResult<T> {
  readonly items: T[];
  readonly resourceVersion: string;
}

export type PatchType = "merge" | "json" | "strategic" | "apply";

const PATCH_CONTENT_TYPES: Record<PatchType, string> = {
  merge: "application/merge-patch+json",
  json: "application/json-patch+json",
  strategic: "application/strategic-merge-patch+json",
  // Server-side apply takes YAML, of which JSON is a subset.
  apply: "application/apply-patch+yaml",
};

export interface PatchOptions {
  readonly type: PatchType;
  readonly subresource?: string;
  /** Required by "apply". */
  readonly fieldManager?: string;
  /** Take over fields other managers own ("apply" only). */
  readonly force?: boolean;
}

export interface DeleteOptions {
  readonly preconditions?: { readonly uid?: string; readonly resourceVersion?: string };
  readonly propagationPolicy?: "Foreground" | "Background" | "Orphan";
  readonly gracePeriodSeconds?: number;
}

export interface WatchOptions {
  readonly namespace?: string;
  /** Where the watch starts (a list's, or the last event's). */
  readonly resourceVersion: string;
  readonly allowWatchBookmarks: boolean;
  /** The server ends the watch after this long. */
  readonly timeoutSeconds: number;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
}

export interface KubeClientOptions {
  readonly userAgent?: string;
  /** Bound on each request (a watch: until its response starts). Default 30 s. */
  readonly timeoutMs?: number;
  /**
   * Called once per request with its method and the answer's HTTP status code, or "<error>"
   * when none came (client-go's rest_client_requests_total).
   */
  readonly onRequest?: (method: string, code: string) => void;
}

interface RawRequest {
  readonly method: string;
  readonly path: string;
  readonly query?: URLSearchParams;
  readonly body?: unknown;
  readonly contentType?: string;
  readonly signal?: AbortSignal | undefined;
}

export class KubeClient {
  private readonly base: URL;
  private readonly agent: HttpAgent;
  private readonly userAgent: string;
  private readonly timeoutMs: number;
  private readonly secure: boolean;
  private readonly onRequest: ((method: string, code: string) => void) | undefined;

  constructor(
    private readonly cfg: KubeConfig,
    opts: KubeClientOptions = {},
  ) {
    this.base = new URL(cfg.server);
    this.secure = this.base.protocol === "https:";
    this.userAgent = opts.userAgent ?? "kube-eip";
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.onRequest = opts.onRequest;
    this.agent = kubeAgent(cfg, this.secure);
  }

  /** Closes the idle connections (and any still open). */
  close(): void {
    this.agent.destroy();
  }

  async get<T>(
    ref: ResourceRef,
    ns: string | undefined,
    name: string,
    req: RequestOptions = {},
  ): Promise<T> {
    return (await this.call({
      method: "GET",
      path: resourcePath(ref, { namespace: scope(ref, ns), name }),
      signal: req.signal,
    })) as T;
  }

  /**
   * Every page of the collection. Items get the list's apiVersion and kind when they lack
   * them (the apiserver leaves them out of built-in types' lists), so every object handed
   * on is self-describing. A continue token that expires midway (410) restarts the list in
   * one piece, as client-go's pager does.
   */
  async list<T>(
    ref: ResourceRef,
    opts: ListOptions = {},
    req: RequestOptions = {},
  ): Promise<ListResult<T>> {
    const path = resourcePath(ref, { namespace: opts.namespace });
    const items: T[] = [];
    let token = opts.continue;
    let paged = true;
    for (;;) {
      const query = new URLSearchParams();
      if (opts.labelSelector) query.set("labelSelector", opts.labelSelector);
      if (opts.fieldSelector) query.set("fieldSelector", opts.fieldSelector);
      if (opts.limit !== undefined && paged) query.set("limit", String(opts.limit));
      if (token) query.set("continue", token);
      let page: unknown;
      try {
        page = await this.call({ method: "GET", path, query, signal: req.signal });
      } catch (err) {
        if (isGone(err) && token !== undefined && opts.continue === undefined) {
          items.length = 0;
          token = undefined;
          paged = false;
          continue;
        }
        throw err;
      }
      if (!isRecord(page) || !Array.isArray(page["items"])) {
        throw new Error(`list ${path}: the answer is not a list`);
      }
      const meta = isRecord(page["metadata"]) ? page["metadata"] : {};
      const kind = typeof page["kind"] === "string" ? page["kind"].replace(/List$/, "") : "";
      const apiVersion = page["apiVersion"];
      for (const item of page["items"] as unknown[]) {
        if (isRecord(item)) {
          if (item["kind"] === undefined && kind) item["kind"] = kind;
          if (item["apiVersion"] === undefined && apiVersion) item["apiVersion"] = apiVersion;
        }
        items.push(item as T);
      }
      token =
        typeof meta["continue"] === "string" && meta["continue"] ? meta["continue"] : undefined;
      if (token === undefined) {
        const rv = meta["resourceVersion"];
        return { items, resourceVersion: typeof rv === "string" ? rv : "" };
      }
    }
  }

  async create<T>(
    ref: ResourceRef,
    ns: string | undefined,
    obj: unknown,
    req: RequestOptions = {},
  ): Promise<T> {
    return (await this.call({
      method: "POST",
      path: resourcePath(ref, { namespace: scope(ref, ns) }),
      body: obj,
      signal: req.signal,
    })) as T;
  }

  /** PUT: the object's metadata.resourceVersion, if set, makes it conditional (409 when stale). */
  async replace<T>(
    ref: ResourceRef,
    ns: string | undefined,
    name: string,
    obj: unknown,
    opts: { readonly subresource?: string } = {},
    req: RequestOptions = {},
  ): Promise<T> {
    return (await this.call({
      method: "PUT",
      path: resourcePath(ref, { namespace: scope(ref, ns), name, subresource: opts.subresource }),
      body: obj,
      signal: req.signal,
    })) as T;
  }

  async patch<T>(
    ref: ResourceRef,
    ns: string | undefined,
    name: string,
    patch: unknown,
    opts: PatchOptions,
    req: RequestOptions = {},
  ): Promise<T> {
    if (opts.type === "apply" && !opts.fieldManager) {
      throw new Error("an apply patch needs a fieldManager");
    }
    if (opts.force && opts.type !== "apply") throw new Error("force is for apply patches only");
    const query = new URLSearchParams();
    if (opts.fieldManager) query.set("fieldManager", opts.fieldManager);
    if (opts.force) query.set("force", "true");
    return (await this.call({
      method: "PATCH",
      path: resourcePath(ref, { namespace: scope(ref, ns), name, subresource: opts.subresource }),
      query,
      body: patch,
      contentType: PATCH_CONTENT_TYPES[opts.type],
      signal: req.signal,
    })) as T;
  }

  async delete(
    ref: ResourceRef,
    ns: string | undefined,
    name: string,
    opts: DeleteOptions = {},
    req: RequestOptions = {},
  ): Promise<void> {
    await this.call({
      method: "DELETE",
      path: resourcePath(ref, { namespace: scope(ref, ns), name }),
      body: { apiVersion: "v1", kind: "DeleteOptions", ...opts },
      signal: req.signal,
    });
  }

  /**
   * Watches the collection from opts.resourceVersion, calling onEvent for each event in
   * order. Resolves when the server ends the stream (timeoutSeconds) or the signal aborts;
   * rejects on an ERROR event (a KubeApiError, e.g. 410 Expired), an answer other than 200,
   * a broken stream, or an exception from onEvent (the watch is then closed).
   */
  async watch<T>(
    ref: ResourceRef,
    opts: WatchOptions,
    onEvent: (type: WatchEventType, obj: T) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const query = new URLSearchParams({ watch: "true", resourceVersion: opts.resourceVersion });
    if (opts.allowWatchBookmarks) query.set("allowWatchBookmarks", "true");
    query.set("timeoutSeconds", String(opts.timeoutSeconds));
    if (opts.labelSelector) query.set("labelSelector", opts.labelSelector);
    if (opts.fieldSelector) query.set("fieldSelector", opts.fieldSelector);
    const path = resourcePath(ref, { namespace: opts.namespace });
    await this.cfg.refreshCredentials?.();
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) return resolve();
      let settled = false;
      const finish = (err?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(headerTimer);
        signal.removeEventListener("abort", onAbort);
        if (err === undefined) resolve();
        else reject(err instanceof Error ? err : new Error(String(err)));
        // Closes the stream on an error or an abort; after a clean end this does nothing.
        req.destroy();
      };
      const onAbort = () => finish();
      const req = this.send({ method: "GET", path, query }, undefined, (res) => {
        clearTimeout(headerTimer);
        if (res.statusCode !== 200) {
          readBody(res).then(
            (body) => finish(KubeApiError.fromResponse(res.statusCode ?? 0, body, `watch ${path}`)),
            finish,
          );
          return;
        }
        const decoder = new WatchDecoder();
        const deliver = (lines: string[]) => {
          for (const line of lines) {
            if (settled) return;
            const ev = parseWatchLine(line);
            onEvent(ev.type, ev.object as T);
          }
        };
        res.on("data", (chunk: Buffer) => {
          try {
            deliver(decoder.push(chunk));
          } catch (err) {
            finish(err);
          }
        });
        res.on("end", () => {
          try {
            deliver(decoder.end());
            finish();
          } catch (err) {
            finish(err);
          }
        });
        res.on("error", finish);
        res.on("close", () => {
          if (!res.complete) finish(new Error(`watch ${path}: the stream broke off`));
        });
      });
      req.on("error", finish);
      const headerTimer = setTimeout(
        () => finish(new Error(`watch ${path}: no answer within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      signal.addEventListener("abort", onAbort, { once: true });
      req.end();
    });
  }

  /** A request whose answer is JSON (or empty); other than 2xx rejects with a KubeApiError. */
  private async call(r: RawRequest): Promise<unknown> {
    const what = `${r.method} ${r.path}`;
    await this.cfg.refreshCredentials?.();
    return new Promise<unknown>((resolve, reject) => {
      if (r.signal?.aborted) return reject(r.signal.reason);
      let settled = false;
      const finish = (err: unknown, value?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        r.signal?.removeEventListener("abort", onAbort);
        if (err === undefined) resolve(value);
        else {
          reject(err instanceof Error ? err : new Error(String(err)));
          req.destroy();
        }
      };
      const onAbort = () => finish(r.signal?.reason ?? new Error(`${what}: aborted`));
      const payload = r.body === undefined ? undefined : JSON.stringify(r.body);
      const req = this.send(r, payload, (res) => {
        readBody(res).then((body) => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) finish(undefined, body);
          else finish(KubeApiError.fromResponse(status, body, what));
        }, finish);
      });
      req.on("error", finish);
      const timer = setTimeout(
        () => finish(new Error(`${what}: no answer within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      r.signal?.addEventListener("abort", onAbort, { once: true });
      req.end(payload);
    });
  }

  private send(
    r: RawRequest,
    payload: string | undefined,
    onAnswer: (res: IncomingMessage) => void,
  ) {
    const onResponse = (res: IncomingMessage) => {
      if (res.statusCode === 401) this.cfg.onUnauthorized?.();
      onAnswer(res);
    };
    const url = new URL(this.base.toString());
    url.pathname = this.base.pathname.replace(/\/$/, "") + r.path;
    url.search = r.query?.toString() ?? "";
    const headers: Record<string, string> = {
      Accept: "application/json",
      "User-Agent": this.userAgent,
    };
    if (payload !== undefined) {
      headers["Content-Type"] = r.contentType ?? "application/json";
      // Node sends a DELETE's body without a length unless told (the server then sees garbage).
      headers["Content-Length"] = String(Buffer.byteLength(payload));
    }
    const token = this.cfg.token?.();
    if (token) headers["Authorization"] = `Bearer ${token}`;
    const request = this.secure ? httpsRequest : httpRequest;
    const observe = this.onRequest;
    if (!observe) return request(url, { method: r.method, agent: this.agent, headers }, onResponse);
    let answered = false;
    const req = request(url, { method: r.method, agent: this.agent, headers }, (res) => {
      answered = true;
      observe(r.method, String(res.statusCode ?? 0));
      onResponse(res);
    });
    // Failed or closed without an answer: refused, reset, timed out or aborted. On an error,
    // before the caller's own listener sees it.
    const unanswered = () => {
      if (answered) return;
      answered = true;
      observe(r.method, "<error>");
    };
    req.once("error", unanswered);
    req.once("close", unanswered);
    return req;
  }
}

/** A namespaced resource's verbs need a namespace; a cluster-scoped one's take none. */
function scope(ref: ResourceRef, ns: string | undefined): string | undefined {
  if (ref.namespaced && !ns) throw new Error(`${ref.resource} need a namespace`);
  if (!ref.namespaced && ns) throw new Error(`${ref.resource} are not namespaced`);
  return ns;
}

/** The body, parsed when it is JSON; "" for none. */
function readBody(res: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on("data", (c: Buffer) => chunks.push(c));
    res.on("error", reject);
    res.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      if (text === "") return resolve("");
      try {
        resolve(JSON.parse(text));
      } catch {
        resolve(text);
      }
    });
  });
}
