// Certificates read again when their files change, so a renewal (kube-eip-certs, or
// cert-manager rewriting a mounted Secret) needs no restart: every check reads the files,
// and when their content differs from the last good one, and they make a valid TLS context
// together, hands them on. Until then the last good files stay in use. Each check also
// reports each certificate's seconds to expiry, and warns when it is close.
import { readFile } from "node:fs/promises";
import { X509Certificate, createHash } from "node:crypto";
import { createSecureContext } from "node:tls";
import type { Logger } from "pino";

export interface TlsFileSet {
  readonly cert?: string;
  readonly key?: string;
  readonly ca?: string;
}

export interface TlsContents {
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly ca?: Buffer;
}

/** A certificate expiring within this is logged as a warning at every check. */
export const EXPIRY_WARNING_SECONDS = 7 * 24 * 3600;
/** How often the files are read in production. */
export const TLS_CHECK_INTERVAL_MS = 10_000;

export interface TlsWatchOptions {
  readonly files: TlsFileSet;
  readonly logger: Logger;
  /** The files changed and are valid together. */
  readonly onChange: (contents: TlsContents) => void;
  /** Seconds to expiry of each certificate file (the soonest in a bundle). */
  readonly onExpiry?: (file: string, seconds: number) => void;
  readonly now?: () => number;
}

async function readAll(files: TlsFileSet): Promise<TlsContents> {
  const read = (p?: string) => (p ? readFile(p) : Promise.resolve(undefined));
  const [cert, key, ca] = await Promise.all([read(files.cert), read(files.key), read(files.ca)]);
  return { ...(cert ? { cert } : {}), ...(key ? { key } : {}), ...(ca ? { ca } : {}) };
}

function digest(c: TlsContents): string {
  const h = createHash("sha256");
  for (const part of [c.cert, c.key, c.ca]) h.update(part ?? "").update("\0");
  return h.digest("hex");
}

/** The soonest notAfter of the certificates in a PEM bundle, in ms since the epoch. */
export function soonestExpiry(pem: Buffer): number {
  const blocks = pem.toString().match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g);
  const times = (blocks ?? []).map((b) => Date.parse(new X509Certificate(b).validTo));
  return times.length > 0 ? Math.min(...times) : NaN;
}

export class TlsFileWatch {
  private last: string;
  private timer: NodeJS.Timeout | undefined;

  /** `initial`: the contents in use now (as read at start). */
  constructor(
    private readonly opts: TlsWatchOptions,
    initial: TlsContents,
  ) {
    this.last = digest(initial);
  }

  /** Checks every intervalMs (unref'd: it never keeps the process alive). */
  start(intervalMs = TLS_CHECK_INTERVAL_MS): void {
    this.timer = setInterval(() => void this.check(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Reads the files once: true when new contents were handed on. */
  async check(): Promise<boolean> {
    const { files, logger } = this.opts;
    let contents: TlsContents;
    try {
      contents = await readAll(files);
    } catch (err) {
      logger.warn(
        { err: (err as Error).message },
        "cannot read the TLS files; keeping the last good ones",
      );
      return false;
    }
    this.reportExpiry(contents);
    const d = digest(contents);
    if (d === this.last) return false;
    try {
      createSecureContext({ cert: contents.cert, key: contents.key, ca: contents.ca });
    } catch (err) {
      // A renewal caught half-written (the certificate new, the key old): the next check.
      logger.warn(
        { err: (err as Error).message, files },
        "TLS files not usable together yet; keeping the last good ones",
      );
      return false;
    }
    this.last = d;
    logger.info({ files }, "TLS files changed: new connections use them");
    this.opts.onChange(contents);
    return true;
  }

  private reportExpiry(c: TlsContents): void {
    const now = this.opts.now?.() ?? Date.now();
    for (const [name, pem] of [
      [this.opts.files.cert, c.cert],
      [this.opts.files.ca, c.ca],
    ] as const) {
      if (!name || !pem) continue;
      const seconds = Math.floor((soonestExpiry(pem) - now) / 1000);
      if (!Number.isFinite(seconds)) continue;
      this.opts.onExpiry?.(name, seconds);
      if (seconds < EXPIRY_WARNING_SECONDS) {
        this.opts.logger.warn(
          { file: name, expiresInSeconds: seconds },
          seconds < 0 ? "TLS certificate expired" : "TLS certificate expires within 7 days",
        );
      }
    }
  }
}
