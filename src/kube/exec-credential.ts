// Exec credential plugins (a kubeconfig user's `exec`, as EKS, GKE and AKS kubeconfigs use):
// the command runs with its arguments as an array (no shell) and a time limit, with the
// kubeconfig's env entries added to ours and KUBERNETES_EXEC_INFO describing the request
// (and the cluster, when provideClusterInfo). It prints an ExecCredential whose status holds
// a token or a client certificate and key. The credential is kept until its
// expirationTimestamp, or until the apiserver answers 401 (invalidate()): the next request
// runs the plugin again. Never interactive (the operator has no terminal).
//
// The first run, when the kubeconfig is read, waits for the plugin (a broken one fails at
// start, and it tells whether the plugin gives tokens or a certificate); later runs are
// asynchronous, one at a time, awaited by the requests that need the new credential.
import { execFile, execFileSync } from "node:child_process";

const API_VERSIONS = ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"];

export interface ExecCredential {
  readonly token?: string;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** Epoch ms; none: valid until a 401. */
  readonly expiresAt?: number;
}

/** What KUBERNETES_EXEC_INFO tells a plugin about the cluster (provideClusterInfo). */
export interface ExecClusterInfo {
  readonly server: string;
  readonly "certificate-authority-data"?: string;
  readonly "tls-server-name"?: string;
  readonly "insecure-skip-tls-verify"?: boolean;
}

export interface ExecCredentialSource {
  /**
   * The kept credential, or a new one from the plugin when none is kept or it expired, the
   * process waiting for the plugin (when the kubeconfig is read).
   */
  get(): ExecCredential;
  /** The kept credential while it is valid. */
  current(): ExecCredential | undefined;
  /** Runs the plugin in the background when no valid credential is kept (before a request). */
  refresh(): Promise<void>;
  /** Forgets the kept credential (the apiserver refused it). */
  invalidate(): void;
}

type Fields = Record<string, unknown>;
const isFields = (v: unknown): v is Fields =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The checked `exec` of a kubeconfig user; throws saying what is wrong. */
export function execCredentialSource(
  exec: Fields,
  opts: {
    where: string;
    cluster: ExecClusterInfo;
    timeoutMs?: number;
    now?: () => number;
    env?: NodeJS.ProcessEnv;
  },
): ExecCredentialSource {
  const w = `${opts.where}: exec`;
  const { command, args, env, apiVersion, installHint } = exec;
  if (typeof command !== "string" || command === "") throw new Error(`${w} has no command`);
  if (typeof apiVersion !== "string" || !API_VERSIONS.includes(apiVersion)) {
    throw new Error(
      `${w}.apiVersion ${String(apiVersion)} is not one of ${API_VERSIONS.join(", ")}`,
    );
  }
  if (
    args !== undefined &&
    args !== null &&
    !(Array.isArray(args) && args.every((a) => typeof a === "string"))
  ) {
    throw new Error(`${w}.args is not a list of strings`);
  }
  if (exec["interactiveMode"] === "Always") {
    throw new Error(
      `${w}: interactiveMode Always needs a terminal, which this process has none of`,
    );
  }
  const extraEnv: Record<string, string> = {};
  for (const e of Array.isArray(env) ? env : env === undefined || env === null ? [] : [null]) {
    if (!isFields(e) || typeof e["name"] !== "string" || typeof e["value"] !== "string") {
      throw new Error(`${w}.env entries need a name and a value`);
    }
    extraEnv[e["name"]] = e["value"];
  }
  const info = {
    apiVersion,
    kind: "ExecCredential",
    spec: {
      interactive: false,
      ...(exec["provideClusterInfo"] === true ? { cluster: opts.cluster } : {}),
    },
  };
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const now = opts.now ?? Date.now;
  const hint = typeof installHint === "string" && installHint !== "" ? `\n${installHint}` : "";

  const file = command;
  const argv = (args as string[] | undefined) ?? [];
  const runOpts = {
    env: { ...(opts.env ?? process.env), ...extraEnv, KUBERNETES_EXEC_INFO: JSON.stringify(info) },
    timeout: timeoutMs,
    encoding: "utf8" as const,
    maxBuffer: 1 << 20,
  };
  const failed = (err: unknown): Error => {
    const e = err as NodeJS.ErrnoException & { stderr?: string; killed?: boolean };
    if (e.code === "ENOENT") return new Error(`${w}: ${command} not found${hint}`);
    const stderr = (e.stderr ?? "").trim().slice(0, 500);
    const why =
      e.code === "ETIMEDOUT" || e.killed === true
        ? `no answer within ${timeoutMs} ms`
        : e.message.split("\n")[0];
    return new Error(`${w}: ${command} failed: ${why}${stderr ? `: ${stderr}` : ""}`);
  };
  const parse = (out: string) => parseExecCredential(out, apiVersion, `${w}: ${command}`);
  const runSync = (): ExecCredential => {
    let out: string;
    try {
      out = execFileSync(file, argv, { ...runOpts, stdio: ["ignore", "pipe", "pipe"] });
    } catch (err) {
      throw failed(err);
    }
    return parse(out);
  };
  const runAsync = () =>
    new Promise<ExecCredential>((resolve, reject) => {
      const child = execFile(file, argv, runOpts, (err, out) => {
        if (err) return reject(failed(Object.assign(err, { stderr: String(err.stderr ?? "") })));
        try {
          resolve(parse(out));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
      child.stdin?.end();
    });

  let kept: ExecCredential | undefined;
  let running: Promise<void> | undefined;
  const valid = () =>
    kept !== undefined && (kept.expiresAt === undefined || now() < kept.expiresAt);
  return {
    get() {
      if (!valid()) {
        kept = undefined;
        kept = runSync();
      }
      return kept as ExecCredential;
    },
    current: () => (valid() ? kept : undefined),
    refresh() {
      if (valid()) return Promise.resolve();
      // One run for all the requests waiting on it.
      running ??= runAsync().then(
        (c) => {
          kept = c;
          running = undefined;
        },
        (err: unknown) => {
          running = undefined;
          throw err;
        },
      );
      return running;
    },
    invalidate() {
      kept = undefined;
    },
  };
}

/** A plugin's output: an ExecCredential of the apiVersion asked, with a token or a cert and key. */
export function parseExecCredential(out: string, apiVersion: string, what: string): ExecCredential {
  let doc: unknown;
  try {
    doc = JSON.parse(out);
  } catch {
    throw new Error(`${what} printed no JSON ExecCredential`);
  }
  if (!isFields(doc) || doc["kind"] !== "ExecCredential")
    throw new Error(`${what} printed no ExecCredential`);
  if (doc["apiVersion"] !== apiVersion) {
    throw new Error(`${what} answered apiVersion ${String(doc["apiVersion"])}, not ${apiVersion}`);
  }
  const status = doc["status"];
  if (!isFields(status)) throw new Error(`${what}'s ExecCredential has no status`);
  const str = (f: string) =>
    typeof status[f] === "string" && status[f] !== "" ? (status[f] as string) : undefined;
  const token = str("token");
  const cert = str("clientCertificateData");
  const key = str("clientKeyData");
  if ((cert === undefined) !== (key === undefined)) {
    throw new Error(
      `${what}'s ExecCredential has a client certificate without its key or the other way round`,
    );
  }
  if (token === undefined && cert === undefined) {
    throw new Error(`${what}'s ExecCredential has neither a token nor a client certificate`);
  }
  const exp = str("expirationTimestamp");
  const expiresAt = exp === undefined ? undefined : Date.parse(exp);
  if (expiresAt !== undefined && Number.isNaN(expiresAt)) {
    throw new Error(`${what}'s ExecCredential expirationTimestamp ${exp} is not a time`);
  }
  return {
    ...(token !== undefined ? { token } : {}),
    // PEM text, as the status carries it (not base64).
    ...(cert !== undefined && key !== undefined
      ? { cert: Buffer.from(cert), key: Buffer.from(key) }
      : {}),
    ...(expiresAt !== undefined ? { expiresAt } : {}),
  };
}
