// kube-eip-certs: makes (or keeps) the CA and certificates in --dir and prints the two TLS
// Secrets for `kubectl apply -f -` (make certs). Exit status 0, 1 when openssl fails, 2 for
// a usage error.
import { Command, CommanderError, InvalidArgumentError } from "commander";
import type { CommandRunner } from "../kernel/runner.js";
import { AGENT_SERVER_NAME, makeCerts, secretsManifest } from "./certs.js";
import { withVersion } from "../common/version.js";

export interface CertsIo {
  out(text: string): void;
  err(text: string): void;
}

function days(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError("a number of days");
  return Number(value);
}

export async function runCertsCli(
  argv: readonly string[],
  io: CertsIo,
  runner: CommandRunner,
): Promise<number> {
  const cmd = withVersion(new Command("kube-eip-certs"))
    .description(
      "Make kube-eip's CA and TLS certificates (kept in --dir; existing files are kept) and print " +
        "the Secrets kube-eip-agent-tls and kube-eip-operator-tls for `kubectl apply -f -`.",
    )
    .requiredOption("--dir <dir>", "folder of the CA, the certificates and their keys")
    .option("--days <n>", "validity of the certificates made now", days, 3650)
    .option(
      "--agent-server-name <name>",
      "the one name in the agents' certificate",
      AGENT_SERVER_NAME,
    )
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err });
  try {
    cmd.parse(argv, { from: "user" });
  } catch (err) {
    return err instanceof CommanderError && err.exitCode === 0 ? 0 : 2;
  }
  const o = cmd.opts<{ dir: string; days: number; agentServerName: string }>();
  try {
    const files = await makeCerts(runner, {
      dir: o.dir,
      days: o.days,
      agentServerName: o.agentServerName,
    });
    io.out(await secretsManifest(files));
    io.err(
      `kube-eip-certs: CA and certificates in ${o.dir} (eipctl: --tls-ca ${files.ca.cert} ` +
        `--tls-cert ${files.admin.cert} --tls-key ${files.admin.key} --tls-server-name ${o.agentServerName})\n`,
    );
    return 0;
  } catch (err) {
    io.err(`kube-eip-certs: ${(err as Error).message}\n`);
    return 1;
  }
}
