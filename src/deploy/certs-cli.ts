// kube-eip-certs: makes (or keeps) the CA and certificates in --dir and prints the two TLS
// Secrets for `kubectl apply -f -` (make certs). Exit status 0, 1 when openssl fails, 2 for
// a usage error.
import { Command, CommanderError, InvalidArgumentError } from "commander";
import type { CommandRunner } from "../kernel/runner.js";
import { NODE_PKI_DIR, type NodeSpec, makeCerts, secretsManifest } from "./certs.js";
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
      "Make kube-eip's two CAs (agents, clients) and TLS certificates (kept in --dir; existing " +
        "files are kept) and print the Secret kube-eip-operator-tls for `kubectl apply -f -`.",
    )
    .requiredOption("--dir <dir>", "folder of the CA, the certificates and their keys")
    .option("--days <n>", "validity of the certificates made now", days, 3650)
    .option(
      "--node <name[=ip]>",
      `make node <name>'s agent certificate (CN kube-eip-agent:<name>, SAN the name and the ip) in <dir>/nodes/<name>/, for the node's ${NODE_PKI_DIR} (repeatable)`,
      (v: string, prev: NodeSpec[]) => {
        const [name = "", ip] = v.split("=", 2);
        return [...prev, ip === undefined ? { name } : { name, ip }];
      },
      [],
    )
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err });
  try {
    cmd.parse(argv, { from: "user" });
  } catch (err) {
    return err instanceof CommanderError && err.exitCode === 0 ? 0 : 2;
  }
  const o = cmd.opts<{ dir: string; days: number; node: NodeSpec[] }>();
  try {
    const files = await makeCerts(runner, { dir: o.dir, days: o.days, nodes: o.node });
    io.out(await secretsManifest(files));
    const nodes = [...files.nodes.keys()].map((n) => `${o.dir}/nodes/${n}/`).join(" ");
    io.err(
      `kube-eip-certs: CAs and certificates in ${o.dir}` +
        (nodes ? `; copy ${nodes} to each node's ${NODE_PKI_DIR}` : "") +
        ` (eipctl: --tls-ca ${files.agentCa.cert} --tls-cert ${files.admin.cert} ` +
        `--tls-key ${files.admin.key} --tls-server-name <node>)\n`,
    );
    return 0;
  } catch (err) {
    io.err(`kube-eip-certs: ${(err as Error).message}\n`);
    return 1;
  }
}
