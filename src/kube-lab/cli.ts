// kube-eip-kube-lab: a real control plane (etcd and kube-apiserver) from the command line.
// `up` prints the admin kubeconfig's path on stdout (the rest on stderr), keeps the control
// plane running until SIGINT, SIGTERM or SIGHUP, then stops it.
import { Command, CommanderError } from "commander";
import { startControlPlane } from "./control-plane.js";
import { withVersion } from "../common/version.js";

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

export function kubeLabCommand(io: Io): Command {
  const program = withVersion(new Command("kube-eip-kube-lab"))
    .description("A real Kubernetes control plane (etcd, kube-apiserver) for tests and the lab")
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err });

  program
    .command("up")
    .description("start etcd and kube-apiserver, print the admin kubeconfig, run until stopped")
    .option(
      "--dir <dir>",
      "run dir, kept and reused (default: a temporary one, removed at the end)",
    )
    .option("--netns <ns>", "run in this network namespace (its loopback must be up)")
    .option("--address <ip>", "address the apiserver listens on", "127.0.0.1")
    .action(async (opts: { dir?: string; netns?: string; address: string }) => {
      // Installed first, so a signal during the start stops the control plane once it is up;
      // kept, so a second Ctrl-C does not kill this process while it stops its children.
      const stopped = new Promise<string>((resolve) => {
        for (const sig of STOP_SIGNALS) process.on(sig, () => resolve(sig));
      });
      const started = Date.now();
      const cp = await startControlPlane({
        dir: opts.dir,
        netns: opts.netns,
        address: opts.address,
      });
      const pids = cp.pids();
      io.out(`${cp.kubeconfig}\n`);
      io.err(
        [
          `control plane (Kubernetes ${cp.binaries.version}) up in ${Date.now() - started} ms${opts.netns ? ` in ${opts.netns}` : ""}`,
          `  server      ${cp.server}`,
          `  kubeconfig  ${cp.kubeconfig}`,
          `  kubectl     ${cp.binaries.kubectl}`,
          `  run dir     ${cp.dir} (pids: etcd ${pids.etcd}, kube-apiserver ${pids.apiServer})`,
          "running until Ctrl-C",
          "",
        ].join("\n"),
      );
      const sig = await stopped;
      await cp.stop();
      io.err(`${sig}: control plane stopped\n`);
    });
  return program;
}

export async function runKubeLab(argv: readonly string[], io: Io): Promise<number> {
  try {
    await kubeLabCommand(io).parseAsync([...argv], { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    io.err(`kube-eip-kube-lab: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
