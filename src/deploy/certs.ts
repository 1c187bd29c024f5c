// TLS between eip-operator (and eipctl) and the agents, made with the real openssl. Two CAs
// of kube-eip's own, so that neither kind of certificate can pose as the other:
// - the agent CA signs one serving certificate per node, CN `kube-eip-agent:<node>` (SAN:
//   the node's name, and its address when given). The operator trusts only this CA for
//   agents and checks, for every call, that the CN names the node it meant to dial.
// - the client CA signs the clients' certificates: `kube-eip-operator` (the operator) and
//   `kube-eip-admin` (eipctl of the administrators). The agents trust only this CA for
//   clients, and of its certificates only the CNs their --tls-allowed-client names.
// A node's files (nodes/<node>/: agent.crt, agent.key, client-ca.crt) go to that node's
// /etc/kube-eip/pki, which the DaemonSet mounts: no node holds another node's key.
//
// Files already in the folder are kept (a second run changes nothing; delete a file to make
// it again, which is how a certificate is renewed), so the CAs outlive their certificates.
import { access, copyFile, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { EC_KEY, issueCert } from "./openssl.js";
import type { CommandRunner } from "../kernel/runner.js";

export const AGENT_NAMESPACE = "kube-eip-agent";
export const OPERATOR_NAMESPACE = "kube-eip-system";
export const OPERATOR_SECRET = "kube-eip-operator-tls";
export const OPERATOR_CN = "kube-eip-operator";
export const ADMIN_CN = "kube-eip-admin";
/** Where a node keeps its agent's files (config/agent mounts it). */
export const NODE_PKI_DIR = "/etc/kube-eip/pki";

/** The CN of node `node`'s agent certificate: its identity. */
export function agentIdentity(node: string): string {
  return `kube-eip-agent:${node}`;
}

export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

/** What one node's agent needs, as it lies in /etc/kube-eip/pki. */
export interface NodePki extends KeyPair {
  readonly clientCa: string;
}

export interface NodeSpec {
  readonly name: string;
  /** Also named in the certificate's SAN. */
  readonly ip?: string;
}

export interface CertFiles {
  readonly agentCa: KeyPair;
  readonly clientCa: KeyPair;
  readonly operator: KeyPair;
  /** For eipctl from an administrator's machine. */
  readonly admin: KeyPair;
  readonly nodes: ReadonlyMap<string, NodePki>;
}

export interface CertOptions {
  readonly dir: string;
  /** Validity of each certificate made now. */
  readonly days?: number;
  readonly nodes?: readonly NodeSpec[];
}

const NODE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function nodePki(dir: string, node: string): NodePki {
  const d = join(dir, "nodes", node);
  return {
    cert: join(d, "agent.crt"),
    key: join(d, "agent.key"),
    clientCa: join(d, "client-ca.crt"),
  };
}

export function certPaths(dir: string, nodes: readonly string[] = []): CertFiles {
  const pair = (name: string): KeyPair => ({
    cert: join(dir, `${name}.crt`),
    key: join(dir, `${name}.key`),
  });
  return {
    agentCa: pair("agent-ca"),
    clientCa: pair("client-ca"),
    operator: pair("operator"),
    admin: pair("admin"),
    nodes: new Map(nodes.map((n) => [n, nodePki(dir, n)])),
  };
}

async function exists(...paths: string[]): Promise<boolean> {
  try {
    await Promise.all(paths.map((p) => access(p)));
    return true;
  } catch {
    return false;
  }
}

async function makeCa(runner: CommandRunner, pair: KeyPair, cn: string, days: number) {
  if (await exists(pair.cert, pair.key)) return;
  await runner.run("openssl", [
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    pair.key,
    "-subj",
    `/CN=${cn}`,
    "-days",
    String(days),
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    pair.cert,
  ]);
}

const LEAF = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"];

/** Makes what is missing in the folder (mode 0700; keys 0600). */
export async function makeCerts(runner: CommandRunner, options: CertOptions): Promise<CertFiles> {
  const nodes = options.nodes ?? [];
  for (const n of nodes) {
    if (!NODE_NAME.test(n.name))
      throw new Error(`--node ${JSON.stringify(n.name)} is not a node name`);
    if (n.ip !== undefined && !/^\d{1,3}(\.\d{1,3}){3}$/.test(n.ip))
      throw new Error(`--node ${n.name}=${JSON.stringify(n.ip)}: not an IPv4 address`);
  }
  const files = certPaths(
    options.dir,
    nodes.map((n) => n.name),
  );
  const days = options.days ?? 3650;
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  await makeCa(runner, files.agentCa, "kube-eip-agent-ca", days);
  await makeCa(runner, files.clientCa, "kube-eip-client-ca", days);
  for (const [pair, cn] of [
    [files.operator, OPERATOR_CN],
    [files.admin, ADMIN_CN],
  ] as const) {
    if (await exists(pair.cert, pair.key)) continue;
    await issueCert(
      runner,
      files.clientCa,
      pair,
      `/CN=${cn}`,
      [...LEAF, "extendedKeyUsage=clientAuth"],
      days,
    );
  }
  for (const n of nodes) {
    const pki = nodePki(options.dir, n.name);
    await mkdir(join(options.dir, "nodes", n.name), { recursive: true, mode: 0o700 });
    if (!(await exists(pki.cert, pki.key))) {
      const san = [`DNS:${n.name}`, ...(n.ip ? [`IP:${n.ip}`] : [])].join(",");
      await issueCert(
        runner,
        files.agentCa,
        pki,
        `/CN=${agentIdentity(n.name)}`,
        [...LEAF, "extendedKeyUsage=serverAuth", `subjectAltName=${san}`],
        days,
      );
    }
    await copyFile(files.clientCa.cert, pki.clientCa);
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
 * The operator's Secret (its client certificate, and the agent CA as ca.crt), as one v1
 * List (JSON, for `kubectl apply -f -`): the layout cert-manager writes too. The agents'
 * files are no Secret: each goes to its own node (nodes/<node>/ to /etc/kube-eip/pki).
 */
export async function secretsManifest(files: CertFiles): Promise<string> {
  const b64 = async (path: string) => (await readFile(path)).toString("base64");
  const secret: Secret = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: OPERATOR_SECRET, namespace: OPERATOR_NAMESPACE },
    type: "kubernetes.io/tls",
    data: {
      "tls.crt": await b64(files.operator.cert),
      "tls.key": await b64(files.operator.key),
      "ca.crt": await b64(files.agentCa.cert),
    },
  };
  return JSON.stringify({ apiVersion: "v1", kind: "List", items: [secret] }, null, 2) + "\n";
}
