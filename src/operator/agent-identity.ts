// Which agent answered: the operator dials a node's address and, on TLS, accepts only the
// certificate of that node's agent (CN kube-eip-agent:<node>, signed by the agent CA), so a
// key stolen from one node cannot serve as another node's agent. The node is the one whose
// InternalIP the operator dials; an address that no node, or several nodes, claim has no
// agent the operator could verify.
import type { PeerCertificate } from "node:tls";
import type { ServerCheck } from "../common/agent-api.js";
import { agentIdentity } from "../deploy/certs.js";

function commonName(cert: PeerCertificate): string {
  const cn = cert.subject?.CN as string | string[] | undefined;
  return Array.isArray(cn) ? cn.join(",") : (cn ?? "");
}

/** The certificate check for a call meant for node `node`'s agent at `address`. */
export function agentCheck(node: string, address: string): ServerCheck {
  const want = agentIdentity(node);
  return (_host, cert) => {
    const got = commonName(cert);
    if (got === want) return undefined;
    return new Error(
      `agent identity mismatch: ${address} presented a certificate for ${JSON.stringify(got.slice(0, 128))}, not ${want} (node ${node})`,
    );
  };
}
