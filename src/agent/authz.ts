// Who may drive the agent. A caller over TLS is known by the Common Name (CN) of the client
// certificate it presented (the TLS handshake has already checked that --tls-client-ca
// signed it): a name in --tls-allowed-client may bind, unbind and list; a name in
// --tls-allowed-reader may only list; any other name is refused, however valid its
// certificate. A call without TLS reached the agent through its Unix socket (guarded by
// the file system) or a TCP port opened plaintext by an explicit --insecure: it is served.
import type { PeerCertificate } from "node:tls";

/** What grpc-js's call.getAuthContext() tells about the connection. */
export interface AuthContext {
  readonly transportSecurityType?: string;
  readonly sslPeerCertificate?: PeerCertificate;
}

export interface AllowList {
  /** CNs that may call everything. */
  readonly clients: readonly string[];
  /** CNs that may call the read-only methods. */
  readonly readers: readonly string[];
}

export type Access = "write" | "read";

/** The CN of the caller's certificate; undefined for a call without TLS. */
export function callerName(auth: AuthContext | null): string | undefined {
  const cert = auth?.sslPeerCertificate;
  if (auth?.transportSecurityType !== "ssl") return undefined;
  const cn = cert?.subject?.CN as string | string[] | undefined;
  return (Array.isArray(cn) ? cn.join(",") : cn) ?? "";
}

export class Authorizer {
  constructor(private readonly list: AllowList) {}

  /** Why the caller may not make a call of this kind; undefined when it may. */
  refusal(auth: AuthContext | null, access: Access): string | undefined {
    if (auth?.transportSecurityType !== "ssl") return undefined;
    const name = callerName(auth) ?? "";
    if (this.list.clients.includes(name)) return undefined;
    if (access === "read" && this.list.readers.includes(name)) return undefined;
    const shown = JSON.stringify(name.slice(0, 128));
    return access === "read"
      ? `client identity ${shown} (certificate CN) is not allowed to read this agent (--tls-allowed-client, --tls-allowed-reader)`
      : `client identity ${shown} (certificate CN) is not allowed to bind or unbind on this agent (--tls-allowed-client)`;
  }
}
