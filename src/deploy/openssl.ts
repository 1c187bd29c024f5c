// Certificates made by the real openssl (argument arrays, never a shell): what the
// deployment's certificates (src/deploy) and the test control plane's (src/kube-lab) share.
import { randomBytes } from "node:crypto";
import { rm, writeFile } from "node:fs/promises";
import type { CommandRunner } from "../kernel/runner.js";

/** A fresh ECDSA P-256 key, unencrypted, for `openssl req`. */
export const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

export interface CertKeyFiles {
  readonly cert: string;
  readonly key: string;
}

/** A certificate the CA signs, with a fresh P-256 key. */
export async function issueCert(
  runner: CommandRunner,
  ca: CertKeyFiles,
  out: CertKeyFiles,
  subject: string,
  extensions: readonly string[],
  days: number,
): Promise<void> {
  const csr = `${out.cert}.csr`;
  const ext = `${out.cert}.ext`;
  try {
    await runner.run("openssl", [
      "req",
      "-new",
      ...EC_KEY,
      "-keyout",
      out.key,
      "-subj",
      subject,
      "-out",
      csr,
    ]);
    await writeFile(ext, extensions.join("\n") + "\n");
    await runner.run("openssl", [
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      ca.cert,
      "-CAkey",
      ca.key,
      "-set_serial",
      `0x${randomBytes(16).toString("hex")}`,
      "-days",
      String(days),
      "-extfile",
      ext,
      "-out",
      out.cert,
    ]);
  } finally {
    await rm(csr, { force: true });
    await rm(ext, { force: true });
  }
}
