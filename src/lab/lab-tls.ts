// Mutual TLS in the lab, as in production: certificates made by kube-eip-certs' code (two
// CAs, one serving certificate per node naming it, the operator's and the administrators'
// client certificates) in the lab's state dir "pki", and the flags that use them. Agents,
// eipctl and the operator run with these by default; plaintext only where a test asks.
import { ADMIN_CN, type CertFiles, OPERATOR_CN, certPaths, makeCerts } from "../deploy/certs.js";
import { ExecRunner } from "../kernel/runner.js";
import type { Lab } from "./lab.js";

const made = new WeakMap<Lab, Promise<CertFiles>>();

function dir(lab: Lab): string {
  return lab.stateDir("pki");
}

function nodeNames(lab: Lab): string[] {
  return lab.describe().nodes.map((n) => n.name);
}

/** The lab's certificates, made once per lab (every node's included). */
export function labPki(lab: Lab): Promise<CertFiles> {
  let p = made.get(lab);
  if (!p) {
    const nodes = lab.describe().nodes.map((n) => ({ name: n.name, ip: n.mgmtAddress }));
    p = makeCerts(new ExecRunner({ timeoutMs: 30_000 }), { dir: dir(lab), nodes, days: 30 });
    made.set(lab, p);
  }
  return p;
}

/** Where the lab's certificates are (labPki makes them). */
export function labPkiPaths(lab: Lab): CertFiles {
  return certPaths(dir(lab), nodeNames(lab));
}

function nodePki(lab: Lab, node: number) {
  const name = lab.node(node).name;
  return labPkiPaths(lab).nodes.get(name) ?? { cert: "", key: "", clientCa: "" };
}

/** The agent of lab node `node` on mutual TLS, allowing the operator and the admin. */
export function agentTlsArgs(lab: Lab, node: number): string[] {
  const pki = nodePki(lab, node);
  return [
    "--tls-cert",
    pki.cert,
    "--tls-key",
    pki.key,
    "--tls-client-ca",
    pki.clientCa,
    "--tls-allowed-client",
    OPERATOR_CN,
    "--tls-allowed-client",
    ADMIN_CN,
  ];
}

/** eipctl as the administrator, verifying node `node`'s agent by the node's name. */
export function eipctlTlsArgs(lab: Lab, node: number): string[] {
  const files = labPkiPaths(lab);
  return [
    "--tls-ca",
    files.agentCa.cert,
    "--tls-cert",
    files.admin.cert,
    "--tls-key",
    files.admin.key,
    "--tls-server-name",
    lab.node(node).name,
  ];
}

/** The operator dialling the agents on mutual TLS. */
export function operatorTlsArgs(lab: Lab): string[] {
  const files = labPkiPaths(lab);
  return [
    "--agent-tls-ca",
    files.agentCa.cert,
    "--agent-tls-cert",
    files.operator.cert,
    "--agent-tls-key",
    files.operator.key,
  ];
}
