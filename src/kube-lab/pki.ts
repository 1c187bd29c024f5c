// The control plane's keys and certificates, made by the real openssl in a folder of the run
// dir: a CA, the apiserver's serving certificate, an admin client certificate (group
// system:masters) and the ServiceAccount signing key. The CA, the admin certificate and the
// signing key are kept when already there, so kubeconfigs and tokens stay valid across
// restarts on the same dir; the serving certificate is made again at each start, since the
// address it names may change.
import { access, mkdir } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { EC_KEY, issueCert } from "../deploy/openssl.js";
import type { CommandRunner } from "../kernel/runner.js";

export interface Pki {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly adminCert: string;
  readonly adminKey: string;
  /** ECDSA P-256 key that signs ServiceAccount tokens, and its public half that checks them. */
  readonly serviceAccountKey: string;
  readonly serviceAccountPublicKey: string;
}

const DAYS = 3650;

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

export function pkiPaths(dir: string): Pki {
  return {
    dir,
    caCert: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    serverCert: join(dir, "apiserver.crt"),
    serverKey: join(dir, "apiserver.key"),
    adminCert: join(dir, "admin.crt"),
    adminKey: join(dir, "admin.key"),
    serviceAccountKey: join(dir, "service-account.key"),
    serviceAccountPublicKey: join(dir, "service-account.pub"),
  };
}

/** subjectAltName entries for the names and addresses (IPs are told apart from DNS names). */
export function subjectAltName(names: readonly string[]): string {
  return [...new Set(names)].map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(",");
}

/**
 * Makes what is missing in `dir`, and the serving certificate for `serverNames` (DNS names
 * and IP addresses the apiserver is reached at) in any case.
 */
export async function ensurePki(
  runner: CommandRunner,
  dir: string,
  serverNames: readonly string[],
): Promise<Pki> {
  const pki = pkiPaths(dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!(await exists(pki.caCert)) || !(await exists(pki.caKey))) {
    await runner.run("openssl", [
      "req",
      "-x509",
      ...EC_KEY,
      "-keyout",
      pki.caKey,
      "-subj",
      "/CN=kube-eip-lab-ca",
      "-days",
      String(DAYS),
      "-out",
      pki.caCert,
    ]);
  }
  if (!(await exists(pki.adminCert)) || !(await exists(pki.adminKey))) {
    await issueCert(
      runner,
      { cert: pki.caCert, key: pki.caKey },
      { cert: pki.adminCert, key: pki.adminKey },
      "/O=system:masters/CN=kube-eip-admin",
      [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=clientAuth",
      ],
      DAYS,
    );
  }
  if (!(await exists(pki.serviceAccountKey)) || !(await exists(pki.serviceAccountPublicKey))) {
    await runner.run("openssl", [
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-out",
      pki.serviceAccountKey,
    ]);
    await runner.run("openssl", [
      "pkey",
      "-in",
      pki.serviceAccountKey,
      "-pubout",
      "-out",
      pki.serviceAccountPublicKey,
    ]);
  }
  await issueCert(
    runner,
    { cert: pki.caCert, key: pki.caKey },
    { cert: pki.serverCert, key: pki.serverKey },
    "/CN=kube-apiserver",
    [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth",
      `subjectAltName=${subjectAltName(serverNames)}`,
    ],
    DAYS,
  );
  return pki;
}
