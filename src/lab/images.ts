// The Dockerfile's images built without a Docker daemon, for `make image-test`
// (e2e/images.privileged.test.ts): buildah builds them into a containers-storage of their own,
// a temporary folder removed whole by close(), on the stand-in base image that
// scripts/image-base.sh keeps in ~/.cache/kube-eip (no registry is pulled from: --pull=never).
// The images' RUN steps share this machine's network (npm ci, apt-get): buildah creates no
// bridge, address or firewall rule anywhere.
import { accessSync, constants } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ExecRunner } from "../kernel/runner.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url));
const BASE_SCRIPT = join(REPO, "scripts", "image-base.sh");
const CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

/** What building and running the images needs besides the lab's tools. */
export const IMAGE_TOOLS = ["buildah", "runc", "debootstrap"] as const;

/** The tools of IMAGE_TOOLS that are not on PATH. */
export function missingImageTools(path = process.env["PATH"] ?? ""): string[] {
  const found = (tool: string) =>
    path.split(delimiter).some((dir) => {
      try {
        accessSync(join(dir, tool), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  return IMAGE_TOOLS.filter((t) => !found(t));
}

/** An image's own settings (buildah inspect's OCIv1.config). */
export interface ImageConfig {
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  readonly env: readonly string[];
  /** "uid[:gid]", "" for root. */
  readonly user: string;
  readonly workingDir: string;
}

/** A build target of the Dockerfile. */
export type Target = "agent" | "operator";

export class ImageStore {
  private readonly runner = new ExecRunner({ timeoutMs: 60_000 });
  private readonly containers = new Set<string>();
  private serial = 0;

  private constructor(
    /** The storage's folder; also where the bundles and the runtime's state go. */
    readonly dir: string,
  ) {}

  /** A new storage holding the stand-in base (made first if the cache has none). */
  static async open(): Promise<ImageStore> {
    const store = new ImageStore(await mkdtemp(join(tmpdir(), "keip-images-")));
    try {
      const runner = new ExecRunner({ timeoutMs: 15 * 60_000 });
      const archive = (await runner.run(BASE_SCRIPT, [])).stdout.trim();
      const dockerfile = await readFile(join(REPO, "Dockerfile"), "utf8");
      const base = /^ARG NODE_IMAGE=(\S+)$/m.exec(dockerfile)?.[1];
      if (!base) throw new Error("the Dockerfile has no ARG NODE_IMAGE");
      const id = (await store.buildah(["pull", "--quiet", `oci-archive:${archive}`])).trim();
      await store.buildah(["tag", id, `docker.io/library/${base}`]);
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  /** buildah on this storage. */
  async buildah(args: readonly string[], timeoutMs?: number): Promise<string> {
    const storage = ["--root", join(this.dir, "storage"), "--runroot", join(this.dir, "run")];
    const r = await this.runner.run(
      "buildah",
      [...storage, "--storage-driver", "overlay", ...args],
      {
        timeoutMs,
      },
    );
    return r.stdout;
  }

  /**
   * The RUN steps trust what this machine trusts: its CA bundle, for npm too (a machine
   * behind a TLS-inspecting proxy). Mounted while they run, never part of an image.
   */
  private async trustMounts(): Promise<string[]> {
    try {
      accessSync(CA_BUNDLE, constants.R_OK);
    } catch {
      return [];
    }
    const npmrc = join(this.dir, "npmrc");
    await writeFile(npmrc, `cafile=${CA_BUNDLE}\n`);
    return [
      "--volume",
      `${CA_BUNDLE}:${CA_BUNDLE}:ro`,
      "--volume",
      `${npmrc}:/usr/local/etc/npmrc:ro`,
    ];
  }

  /** Builds a target of the repository's Dockerfile as `docker build --target` does. */
  async build(target: Target, commit = "unknown"): Promise<string> {
    const image = `localhost/kube-eip-image-test/${target}:latest`;
    // --layers: the second target reuses the stages the first one built.
    await this.buildah(
      [
        "bud",
        "--pull=never",
        "--network=host",
        // RUN steps chrooted, not in a runtime's container: the same files result, and no
        // cgroup is needed (crun, buildah's runtime in Debian, refuses hybrid cgroups).
        "--isolation=chroot",
        "--layers",
        "--quiet",
        ...(await this.trustMounts()),
        "--build-arg",
        `KUBE_EIP_COMMIT=${commit}`,
        "--target",
        target,
        "--tag",
        image,
        "--file",
        join(REPO, "Dockerfile"),
        REPO,
      ],
      15 * 60_000,
    );
    return image;
  }

  async config(image: string): Promise<ImageConfig> {
    const out = await this.buildah(["inspect", "--type", "image", image]);
    const c =
      (
        JSON.parse(out) as {
          OCIv1?: {
            config?: {
              Entrypoint?: string[];
              Cmd?: string[];
              Env?: string[];
              User?: string;
              WorkingDir?: string;
            };
          };
        }
      ).OCIv1?.config ?? {};
    return {
      entrypoint: c.Entrypoint ?? [],
      cmd: c.Cmd ?? [],
      env: c.Env ?? [],
      user: c.User ?? "",
      workingDir: c.WorkingDir ?? "/",
    };
  }

  /** A working container of the image, mounted: its id and root folder. */
  async mount(image: string): Promise<{ id: string; rootfs: string }> {
    const name = `keip-${process.pid}-${++this.serial}`;
    const id = (await this.buildah(["from", "--pull=never", "--name", name, image])).trim();
    this.containers.add(id);
    const rootfs = (await this.buildah(["mount", id])).trim();
    return { id, rootfs };
  }

  /** Removes everything: working containers, images, the storage's folder. */
  async close(): Promise<void> {
    for (const id of this.containers) await this.buildah(["rm", id]).catch(() => {});
    await this.buildah(["rmi", "--all", "--force"]).catch(() => {});
    // containers/storage keeps its overlay folder mounted; nothing may stay mounted in dir.
    const mounts = await this.runner.run("findmnt", ["-rn", "-o", "TARGET"]);
    const ours = mounts.stdout
      .split("\n")
      .filter((m) => m.startsWith(`${this.dir}/`))
      .sort()
      .reverse();
    for (const m of ours) await this.runner.run("umount", ["-l", m]).catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }
}
