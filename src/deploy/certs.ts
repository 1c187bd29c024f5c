// TLS between eip-operator (and eipctl) and the agents, made with the real openssl: a CA of
// kube-eip's own, one server certificate all agents share, the operator's client
// certificate and one for eipctl, and the two Secrets the manifests mount.
//
// The agents' certificate names only `eip-agent.kube-eip-agent` (AGENT_SERVER_NAME): the
// operator dials a node's InternalIP and verifies that name (--agent-tls-server-name, as
// eipctl's --tls-server-name), so nodes can come and go without new certificates. The agents
// accept any client whose certificate the CA signed.
//
// Files already in the folder are kept (a second run changes nothing; delete a file to make
// it again), so the CA outlives its certificates and new ones stay trusted.
import { access, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { EC_KEY, issueCert } from "./openssl.js";
import type { CommandRunner } from "../kernel/runner.js";

export const AGENT_SERVER_NAME = "eip-agent.kube-eip-agent";
export const AGENT_NAMESPACE = "kube-eip-agent";
export const OPERATOR_NAMESPACE = "kube-eip-system";
export const AGENT_SECRET = "kube-eip-agent-tls";
export const OPERATOR_SECRET = "kube-eip-operator-tls";

export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

export interface CertFiles {
  readonly ca: KeyPair;
  readonly agent: KeyPair;
  readonly operator: KeyPair;
  /** For eipctl from an administrator's machine. */
  readonly admin: KeyPair;
}

export interface CertOptions {
  readonly dir: string;
  /** Validity of each certificate made now. */
  readonly days?: number;
  readonly agentServerName?: string;
}

export function certPaths(dir: string): CertFiles {
  const pair = (name: string): KeyPair => ({
    cert: join(dir, `${name}.crt`),
    key: join(dir, `${name}.key`),
  });
  return { ca: pair("ca"), agent: pair("agent"), operator: pair("operator"), admin: pair("admin") };
}

async function exists(pair: KeyPair): Promise<boolean> {
  try {
    await Promise.all([access(pair.cert), access(pair.key)]);
    return true;
  } catch {
    return false;
  }
}

/** Makes what is missing in the folder (mode 0700; keys 0600). */
export async function makeCerts(runner: CommandRunner, options: CertOptions): Promise<CertFiles> {
  const files = certPaths(options.dir);
  const days = options.days ?? 3650;
  const serverName = options.agentServerName ?? AGENT_SERVER_NAME;
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  if (!(await exists(files.ca))) {
    await runner.run("openssl", [
      "req",
      "-x509",
      ...EC_KEY,
      "-keyout",
      files.ca.key,
      "-subj",
      "/CN=kube-eip-ca",
      "-days",
      String(days),
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-out",
      files.ca.cert,
    ]);
  }
  const leaves: [KeyPair, string, string[]][] = [
    [
      files.agent,
      `/CN=${serverName}`,
      ["extendedKeyUsage=serverAuth", `subjectAltName=DNS:${serverName}`],
    ],
    [files.operator, "/CN=kube-eip-operator", ["extendedKeyUsage=clientAuth"]],
    [files.admin, "/CN=kube-eip-admin", ["extendedKeyUsage=clientAuth"]],
  ];
  for (const [pair, subject, usage] of leaves) {
    if (await exists(pair)) continue;
    await issueCert(
      runner,
      files.ca,
      pair,
      subject,
      ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", ...usage],
      days,
    );
  }
  return files;
}

interface Secret {
  readonly apiVersion: "v1";
  readonly kind: "Secret";
  readonly metadata: { readonly name: string; readonly namespace: string };
  readonly type: "kubernetes.io/tls";
  readonly data: Readonly<Record<"tls.crt" | "tls.key" | "ca.crt", string>>;
}

/**
 * The Secrets the manifests mount, as one v1 List (JSON, for `kubectl apply -f -`): the
 * layout cert-manager writes too (tls.crt, tls.key, ca.crt).
 */
export async function secretsManifest(files: CertFiles): Promise<string> {
  const b64 = async (path: string) => (await readFile(path)).toString("base64");
  const secret = async (name: string, namespace: string, pair: KeyPair): Promise<Secret> => ({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace },
    type: "kubernetes.io/tls",
    data: {
      "tls.crt": await b64(pair.cert),
      "tls.key": await b64(pair.key),
      "ca.crt": await b64(files.ca.cert),
    },
  });
  const items = [
    await secret(AGENT_SECRET, AGENT_NAMESPACE, files.agent),
    await secret(OPERATOR_SECRET, OPERATOR_NAMESPACE, files.operator),
  ];
  return JSON.stringify({ apiVersion: "v1", kind: "List", items }, null, 2) + "\n";
}
