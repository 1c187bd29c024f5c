// The agent's TLS credentials, renewed in place: grpc-js hands new secure context options
// to its TLS servers (setSecureContext), so new connections get the new certificate and
// client CA while open ones go on with the old. tls-files.ts says when the files changed.
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type { SecureContextOptions } from "node:tls";
import type { Logger } from "pino";
import { type TlsContents, TlsFileWatch } from "../common/tls-files.js";
import type { AgentMetrics } from "./metrics.js";

export class ReloadingServerCredentials extends grpc.ServerCredentials {
  constructor(contents: TlsContents) {
    super(
      { requestCert: true, rejectUnauthorized: true },
      ReloadingServerCredentials.options(contents),
    );
  }

  static options(c: TlsContents): SecureContextOptions {
    return {
      ...(c.cert ? { cert: c.cert } : {}),
      ...(c.key ? { key: c.key } : {}),
      ...(c.ca ? { ca: c.ca } : {}),
    };
  }

  /** New connections use these from now on. */
  update(contents: TlsContents): void {
    this.updateSecureContextOptions(ReloadingServerCredentials.options(contents));
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** The files of --tls-cert, --tls-key and --tls-client-ca, as read now. */
export function readServerTls(tls: { cert: string; key: string; clientCa: string }): TlsContents {
  return {
    cert: readFileSync(tls.cert),
    key: readFileSync(tls.key),
    ca: readFileSync(tls.clientCa),
  };
}

/** Watches the agent's TLS files: renewals reach `creds`; expiry goes to the metric. */
export function watchServerTls(
  tls: { cert: string; key: string; clientCa: string },
  creds: ReloadingServerCredentials,
  logger: Logger,
  metrics: AgentMetrics,
  initial: TlsContents,
): TlsFileWatch {
  const watch = new TlsFileWatch(
    {
      files: { cert: tls.cert, key: tls.key, ca: tls.clientCa },
      logger,
      onChange: (c) => creds.update(c),
      onExpiry: (file, seconds) => metrics.tlsExpiry.set({ file }, seconds),
    },
    initial,
  );
  void watch.check();
  watch.start();
  return watch;
}
