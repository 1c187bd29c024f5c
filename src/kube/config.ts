// Where the Kubernetes client finds its apiserver and credentials, in controller-runtime's
// order: an explicit kubeconfig path, the files of $KUBECONFIG, the in-cluster
// ServiceAccount (KUBERNETES_SERVICE_HOST/PORT and the mounted token and CA), ~/.kube/config.
//
// Kubeconfigs are YAML (kubectl, kubeadm and kind write YAML; the kube-lab writes JSON, which
// is YAML too), parsed with the `yaml` package as YAML 1.1, like the Go YAML library kubectl
// reads them with (`insecure-skip-tls-verify: yes` is true). Supported: certificate-authority
// (-data), client-certificate(-data), client-key(-data), token, tokenFile,
// insecure-skip-tls-verify, tls-server-name, proxy-url (http://, proxy.ts), exec plugins
// (exec-credential.ts) and the context's namespace. Refused with a clear error rather than
// ignored, since the requests would fail later in a confusing way: auth-provider plugins
// (gone from kubectl), basic auth. Relative file paths are relative to the kubeconfig's folder, as kubectl reads them. Several files in $KUBECONFIG are merged
// as kubectl merges them (readKubeConfigFiles).
//
// Tokens from a file (tokenFile, the in-cluster token) are read again every tokenRefreshMs
// (a minute, as client-go does): bound ServiceAccount tokens rotate while the process runs.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, dirname, isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { execCredentialSource } from "./exec-credential.js";
import { checkProxyUrl } from "./proxy.js";

export interface KubeConfig {
  /** https://host:port, possibly with a path prefix. */
  readonly server: string;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** The bearer token, asked at each request (it may rotate). */
  readonly token?: () => string;
  readonly insecureSkipTlsVerify?: boolean;
  /** The name the server's certificate is checked against, when not the server's host. */
  readonly tlsServerName?: string;
  /** An http:// proxy the client reaches the apiserver through (CONNECT for https). */
  readonly proxyUrl?: string;
  /** Awaited before each request: renews an expired credential (an exec plugin's). */
  readonly refreshCredentials?: () => Promise<void>;
  /** Told of each 401 (an exec plugin's credential is then run for again). */
  readonly onUnauthorized?: () => void;
  /** The context's namespace, or the ServiceAccount's in a cluster. */
  readonly namespace?: string;
  /** Where this came from (a file path or "in-cluster"), for logs. */
  readonly source?: string;
}

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** client-go re-reads token files once a minute. */
const TOKEN_REFRESH_MS = 60_000;

export interface LoadKubeConfigOptions {
  /** A kubeconfig file; wins over everything else. */
  readonly kubeconfig?: string;
  /** A context of the kubeconfig; default its current-context. */
  readonly context?: string;
  /** Default process.env. */
  readonly env?: NodeJS.ProcessEnv;
  /** Default SERVICE_ACCOUNT_DIR. */
  readonly serviceAccountDir?: string;
  /** Default the user's home (where .kube/config is). */
  readonly homeDir?: string;
  /** How often a token file is read again; 0 reads it at every request. */
  readonly tokenRefreshMs?: number;
}

export function loadKubeConfig(opts: LoadKubeConfigOptions = {}): KubeConfig {
  const env = opts.env ?? process.env;
  const fileOpts = { context: opts.context, tokenRefreshMs: opts.tokenRefreshMs };
  if (opts.kubeconfig) return readKubeConfigFile(opts.kubeconfig, fileOpts);
  const fromEnv = (env["KUBECONFIG"] ?? "").split(delimiter).filter((p) => p !== "");
  if (fromEnv.length > 0) return readKubeConfigFiles(fromEnv, fileOpts);
  if (env["KUBERNETES_SERVICE_HOST"] && env["KUBERNETES_SERVICE_PORT"]) {
    return inClusterConfig(env, opts.serviceAccountDir ?? SERVICE_ACCOUNT_DIR, opts.tokenRefreshMs);
  }
  const home = opts.homeDir ?? (env["HOME"] || homedir());
  return readKubeConfigFile(join(home, ".kube", "config"), fileOpts);
}

/** The namespace of the ServiceAccount this pod runs as, if it runs in a cluster. */
export function namespaceFromServiceAccount(dir = SERVICE_ACCOUNT_DIR): string | undefined {
  try {
    return readFileSync(join(dir, "namespace"), "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The ServiceAccount's configuration, as client-go's rest.InClusterConfig() builds it. */
export function inClusterConfig(
  env: NodeJS.ProcessEnv,
  dir = SERVICE_ACCOUNT_DIR,
  tokenRefreshMs = TOKEN_REFRESH_MS,
): KubeConfig {
  const host = env["KUBERNETES_SERVICE_HOST"] ?? "";
  const port = env["KUBERNETES_SERVICE_PORT"] ?? "";
  if (!host || !port) throw new Error("not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset");
  const namespace = namespaceFromServiceAccount(dir);
  return {
    server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
    ca: readFileSync(join(dir, "ca.crt")),
    token: fileTokenSource(join(dir, "token"), { refreshMs: tokenRefreshMs }),
    ...(namespace !== undefined ? { namespace } : {}),
    source: "in-cluster",
  };
}

/**
 * A token read from a file now and again every refreshMs. A failed re-read keeps the last
 * token (the kubelet swaps the file atomically, so that is a passing glitch); a file that
 * cannot be read at first is an error at once.
 */
export function fileTokenSource(
  path: string,
  opts: { refreshMs?: number; now?: () => number } = {},
): () => string {
  const refreshMs = opts.refreshMs ?? TOKEN_REFRESH_MS;
  const now = opts.now ?? Date.now;
  const read = () => {
    const token = readFileSync(path, "utf8").trim();
    if (token === "") throw new Error(`token file ${path} is empty`);
    return token;
  };
  let token = read();
  let readAt = now();
  return () => {
    if (now() - readAt >= refreshMs) {
      try {
        token = read();
      } catch {
        // Keep the last token; the next request tries again.
      }
      readAt = now();
    }
    return token;
  };
}

export function readKubeConfigFile(
  path: string,
  opts: { context?: string; tokenRefreshMs?: number } = {},
): KubeConfig {
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (err) {
    throw new Error(`kubeconfig ${abs}: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    return { ...parseKubeConfig(text, { ...opts, baseDir: dirname(abs) }), source: abs };
  } catch (err) {
    throw new Error(`kubeconfig ${abs}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * Several kubeconfigs (the files of $KUBECONFIG) merged as kubectl merges them: files that do
 * not exist are skipped; for each named cluster, user and context the first file that has it
 * wins; current-context comes from the first file that sets it; relative paths are resolved
 * against the file that names them.
 */
export function readKubeConfigFiles(
  paths: readonly string[],
  opts: { context?: string; tokenRefreshMs?: number } = {},
): KubeConfig {
  const merged: Fields = { clusters: [], users: [], contexts: [] };
  const seen = new Set<string>();
  const read: string[] = [];
  for (const path of paths) {
    const abs = resolve(path);
    let text: string;
    try {
      text = readFileSync(abs, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new Error(`kubeconfig ${abs}: ${err instanceof Error ? err.message : String(err)}`);
    }
    read.push(abs);
    let doc: Fields;
    try {
      doc = resolvePaths(parseDoc(text), dirname(abs));
    } catch (err) {
      throw new Error(`kubeconfig ${abs}: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (merged["current-context"] === undefined && doc["current-context"]) {
      merged["current-context"] = doc["current-context"];
    }
    for (const list of ["clusters", "users", "contexts"]) {
      const entries = doc[list] ?? [];
      if (!Array.isArray(entries)) throw new Error(`kubeconfig ${abs}: ${list} is not a list`);
      for (const e of entries) {
        if (!isFields(e) || typeof e["name"] !== "string") continue;
        const key = `${list}/${e["name"]}`;
        if (seen.has(key)) continue;
        seen.add(key);
        (merged[list] as unknown[]).push(e);
      }
    }
  }
  const source = read.join(delimiter);
  if (read.length === 0) throw new Error(`kubeconfig: none of ${paths.join(delimiter)} exists`);
  try {
    return { ...parseKubeConfigDoc(merged, opts), source };
  } catch (err) {
    throw new Error(`kubeconfig ${source}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** The file paths of a kubeconfig's clusters and users made absolute, against baseDir. */
function resolvePaths(doc: Fields, baseDir: string): Fields {
  const abs = (obj: Fields, field: string) => {
    const v = obj[field];
    if (typeof v === "string" && v !== "" && !isAbsolute(v)) obj[field] = join(baseDir, v);
  };
  const inner = (list: string, key: string) =>
    (Array.isArray(doc[list]) ? (doc[list] as unknown[]) : [])
      .map((e) => (isFields(e) ? e[key] : undefined))
      .filter(isFields);
  for (const c of inner("clusters", "cluster")) abs(c, "certificate-authority");
  for (const u of inner("users", "user")) {
    for (const f of ["client-certificate", "client-key", "tokenFile"]) abs(u, f);
    // kubectl resolves an exec command only when it is a path (has a separator), not a
    // name to look up in $PATH.
    const exec = u["exec"];
    if (isFields(exec) && typeof exec["command"] === "string" && exec["command"].includes("/")) {
      abs(exec, "command");
    }
  }
  return doc;
}

type Fields = Record<string, unknown>;

function parseDoc(text: string): Fields {
  const doc: unknown = parseYaml(text, { version: "1.1" });
  if (!isFields(doc)) throw new Error("not a kubeconfig (no mapping at the top)");
  return doc;
}

function isFields(v: unknown): v is Fields {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function optString(obj: Fields, field: string, where: string): string | undefined {
  const v = obj[field];
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw new Error(`${where}.${field} is not a string`);
  return v;
}

/** The `name`d entry's `inner` object of a kubeconfig list (clusters, users, contexts). */
function namedEntry(config: Fields, list: string, inner: string, name: string): Fields {
  const entries = config[list] ?? [];
  if (!Array.isArray(entries)) throw new Error(`${list} is not a list`);
  const entry: unknown = entries.find((e) => isFields(e) && e["name"] === name);
  if (!isFields(entry)) throw new Error(`no ${inner} named ${JSON.stringify(name)} in ${list}`);
  const value = entry[inner] ?? {};
  if (!isFields(value)) throw new Error(`${list}[${name}].${inner} is not a mapping`);
  return value;
}

/**
 * A kubeconfig's text (YAML or JSON) for one context, with the files it names read now.
 * baseDir resolves relative paths (the kubeconfig's folder).
 */
export function parseKubeConfig(
  text: string,
  opts: { context?: string; baseDir: string; tokenRefreshMs?: number },
): KubeConfig {
  return parseKubeConfigDoc(resolvePaths(parseDoc(text), opts.baseDir), opts);
}

function parseKubeConfigDoc(
  doc: Fields,
  opts: { context?: string; tokenRefreshMs?: number },
): KubeConfig {
  const contextName = opts.context ?? optString(doc, "current-context", "kubeconfig");
  if (contextName === undefined) throw new Error("no context given and no current-context");
  const context = namedEntry(doc, "contexts", "context", contextName);
  const where = `context ${contextName}`;
  const clusterName = optString(context, "cluster", where);
  if (clusterName === undefined) throw new Error(`${where} names no cluster`);
  const cluster = namedEntry(doc, "clusters", "cluster", clusterName);
  const userName = optString(context, "user", where);
  const user = userName === undefined ? {} : namedEntry(doc, "users", "user", userName);
  const namespace = optString(context, "namespace", where);

  const cw = `cluster ${clusterName}`;
  const server = optString(cluster, "server", cw);
  if (server === undefined) throw new Error(`${cw} has no server`);
  if (!/^https?:\/\//.test(server))
    throw new Error(`${cw}: server ${server} is not an http(s) URL`);
  const proxyUrl = optString(cluster, "proxy-url", cw);
  if (proxyUrl !== undefined) checkProxyUrl(proxyUrl, cw);
  const insecure = cluster["insecure-skip-tls-verify"] ?? false;
  if (typeof insecure !== "boolean")
    throw new Error(`${cw}.insecure-skip-tls-verify is not a boolean`);
  const tlsServerName = optString(cluster, "tls-server-name", cw);

  const uw = `user ${userName ?? ""}`;
  for (const unsupported of ["auth-provider", "username", "password"]) {
    if (user[unsupported] !== undefined && user[unsupported] !== null) {
      throw new Error(`${uw}: ${unsupported} credentials are not supported`);
    }
  }
  const file = (p: string) => readFileSync(p);
  /** The `<field>-data` (base64) or the file `<field>` names. */
  const material = (obj: Fields, field: string, w: string): Buffer | undefined => {
    const data = optString(obj, `${field}-data`, w);
    if (data !== undefined) return Buffer.from(data, "base64");
    const path = optString(obj, field, w);
    return path === undefined ? undefined : file(path);
  };
  const ca = material(cluster, "certificate-authority", cw);
  const cert = material(user, "client-certificate", uw);
  const key = material(user, "client-key", uw);
  if ((cert === undefined) !== (key === undefined)) {
    throw new Error(`${uw}: a client certificate needs its key and the other way round`);
  }
  const staticToken = optString(user, "token", uw);
  const tokenFile = optString(user, "tokenFile", uw);
  let token: (() => string) | undefined;
  let fromPlugin: Pick<KubeConfig, "cert" | "key" | "refreshCredentials" | "onUnauthorized"> = {};
  const exec = user["exec"];
  if (exec !== undefined && exec !== null) {
    if (!isFields(exec)) throw new Error(`${uw}.exec is not a mapping`);
    if (cert !== undefined) throw new Error(`${uw}: exec and a client certificate together`);
    const source = execCredentialSource(exec, {
      where: uw,
      cluster: {
        server,
        ...(ca !== undefined ? { "certificate-authority-data": ca.toString("base64") } : {}),
        ...(tlsServerName !== undefined ? { "tls-server-name": tlsServerName } : {}),
        ...(insecure ? { "insecure-skip-tls-verify": true } : {}),
      },
    });
    const first = source.get();
    if (first.cert !== undefined) {
      // The client's TLS material is fixed when it starts: a certificate that expires would
      // need a new connection pool, which the client does not build.
      if (first.expiresAt !== undefined) {
        throw new Error(`${uw}: exec plugin client certificates that expire are not supported`);
      }
      fromPlugin = { cert: first.cert, ...(first.key !== undefined ? { key: first.key } : {}) };
    } else {
      token = () => {
        const t = (source.current() ?? source.get()).token;
        if (t === undefined) throw new Error(`${uw}: the exec plugin stopped giving a token`);
        return t;
      };
      fromPlugin = {
        refreshCredentials: () => source.refresh(),
        onUnauthorized: () => source.invalidate(),
      };
    }
  }
  if (token !== undefined && (staticToken ?? tokenFile) !== undefined) {
    throw new Error(`${uw}: exec and a token together; which one is meant?`);
  }
  if (staticToken !== undefined) token = () => staticToken;
  else if (tokenFile !== undefined) {
    token = fileTokenSource(tokenFile, { refreshMs: opts.tokenRefreshMs });
  }
  return {
    server: server.replace(/\/+$/, ""),
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
    ...fromPlugin,
    ...(token !== undefined ? { token } : {}),
    ...(insecure ? { insecureSkipTlsVerify: true } : {}),
    ...(tlsServerName !== undefined ? { tlsServerName } : {}),
    ...(proxyUrl !== undefined ? { proxyUrl } : {}),
    ...(namespace !== undefined ? { namespace } : {}),
  };
}
