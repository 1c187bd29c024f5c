// The real kubectl, run with one kubeconfig (and, when the apiserver lives in a network
// namespace, inside that namespace, where its address is reachable). Commands are argument
// arrays through a CommandRunner, never a shell.
import type { CommandRunner } from "../kernel/runner.js";

export interface KubectlOptions {
  readonly binary: string;
  readonly kubeconfig: string;
  /** Run kubectl in this network namespace (`ip netns exec`). */
  readonly netns?: string;
}

/** Field manager of what the lab applies. */
const FIELD_MANAGER = "kube-eip-lab";

export class Kubectl {
  constructor(
    private readonly runner: CommandRunner,
    readonly options: KubectlOptions,
  ) {}

  /** The same kubectl with another kubeconfig (a ServiceAccount's, say). */
  withKubeconfig(kubeconfig: string): Kubectl {
    return new Kubectl(this.runner, { ...this.options, kubeconfig });
  }

  /** Runs kubectl; resolves with its stdout, rejects with a CommandError on failure. */
  async run(args: readonly string[], options: { input?: string } = {}): Promise<string> {
    const argv = [this.options.binary, "--kubeconfig", this.options.kubeconfig, ...args];
    const result =
      this.options.netns === undefined
        ? await this.runner.run(argv[0] ?? "", argv.slice(1), options)
        : await this.runner.run("ip", ["netns", "exec", this.options.netns, ...argv], options);
    return result.stdout;
  }

  /** `kubectl get -o json`, parsed. */
  async getJson(args: readonly string[]): Promise<unknown> {
    return JSON.parse(await this.run(["get", ...args, "-o", "json"])) as unknown;
  }

  /** Server-side apply of manifest files (or folders). */
  async applyManifests(files: readonly string[]): Promise<void> {
    await this.run([
      "apply",
      "--server-side",
      `--field-manager=${FIELD_MANAGER}`,
      ...files.flatMap((f) => ["-f", f]),
    ]);
  }

  /** Waits until the CustomResourceDefinition is Established (its API is served). */
  async waitForCrdEstablished(name: string, timeoutMs = 30_000): Promise<void> {
    await this.run([
      "wait",
      "--for=condition=Established",
      `customresourcedefinition/${name}`,
      `--timeout=${Math.ceil(timeoutMs / 1000)}s`,
    ]);
  }
}
