// The agent's TLS flags and the rules that make it secure by default: gRPC on a TCP address
// other than loopback is served only with mutual TLS and an allow-list of client names, or
// plaintext with an explicit --insecure (which the agent then says at start and in a metric).
import type { Command } from "commander";
import type { AllowList } from "./authz.js";

export interface TlsFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  tlsAllowedClient: string[];
  tlsAllowedReader: string[];
  insecure: boolean;
}

export interface AgentTls {
  readonly cert: string;
  readonly key: string;
  readonly clientCa: string;
  readonly allow: AllowList;
}

export class TlsConfigError extends Error {
  override name = "TlsConfigError";
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function addTlsOptions(cmd: Command): Command {
  return cmd
    .option("--tls-cert <file>", "serve gRPC with TLS using this certificate (PEM)")
    .option("--tls-key <file>", "private key of --tls-cert (PEM)")
    .option("--tls-client-ca <file>", "require client certificates signed by this CA (PEM)")
    .option(
      "--tls-allowed-client <name>",
      "a client certificate CN that may bind, unbind and list (repeatable)",
      collect,
      [],
    )
    .option(
      "--tls-allowed-reader <name>",
      "a client certificate CN that may only list (repeatable)",
      collect,
      [],
    )
    .option(
      "--insecure",
      "serve gRPC without TLS on a non-loopback --listen-address: anyone who reaches the port drives the agent",
      false,
    );
}

/** True for an address only this host reaches. */
export function isLoopback(address: string): boolean {
  return /^127\.\d+\.\d+\.\d+$/.test(address) || address === "::1" || address === "localhost";
}

/** The TLS settings the flags ask for, or throws TlsConfigError saying what is wrong. */
export function tlsConfig(o: TlsFlags, listenAddress: string): AgentTls | undefined {
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) {
    throw new TlsConfigError("--tls-cert and --tls-key go together");
  }
  if (o.tlsClientCa && !o.tlsCert)
    throw new TlsConfigError("--tls-client-ca needs --tls-cert and --tls-key");
  if (o.tlsCert && !o.tlsClientCa) {
    throw new TlsConfigError(
      "--tls-cert without --tls-client-ca would serve any client: give --tls-client-ca and --tls-allowed-client",
    );
  }
  const named = o.tlsAllowedClient.length + o.tlsAllowedReader.length > 0;
  if (!o.tlsCert) {
    if (named) throw new TlsConfigError("--tls-allowed-client and --tls-allowed-reader need TLS");
    if (!o.insecure && !isLoopback(listenAddress)) {
      throw new TlsConfigError(
        `refusing to serve gRPC without TLS on ${listenAddress}: give --tls-cert, --tls-key, ` +
          "--tls-client-ca and --tls-allowed-client, or --insecure to serve plaintext anyway",
      );
    }
    return undefined;
  }
  if (o.insecure) throw new TlsConfigError("--insecure contradicts --tls-cert");
  if (o.tlsAllowedClient.length === 0) {
    throw new TlsConfigError(
      "--tls-client-ca without --tls-allowed-client would let any certificate the CA signed drive the agent: name the clients (e.g. --tls-allowed-client kube-eip-operator)",
    );
  }
  return {
    cert: o.tlsCert,
    key: o.tlsKey as string,
    clientCa: o.tlsClientCa as string,
    allow: { clients: o.tlsAllowedClient, readers: o.tlsAllowedReader },
  };
}
