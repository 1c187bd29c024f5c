// An image run by an OCI runtime (runc) in a lab namespace, the way the kubelet would run its
// container: the image's entrypoint with the object's args, only the capabilities it adds,
// its user, privilege escalation and read-only root as it says, its mounts; the network namespace is
// the lab namespace's (its path /var/run/netns/<ns>), never this host's. Stopped with
// `runc kill` and deleted by its id; the runtime's state lives in the ImageStore's folder.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ExecRunner } from "../kernel/runner.js";
import type { ImageStore } from "./images.js";
import { type LabProcess, spawnTracked } from "./process.js";

export interface Mount {
  readonly destination: string;
  /** A file or folder of this host; absent: a tmpfs. */
  readonly source?: string;
  readonly readOnly?: boolean;
}

export interface ContainerSpec {
  /** The lab namespace whose network the container shares. */
  readonly ns: string;
  /** The container's arguments after the image's entrypoint (the object's `args`). */
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** Added capabilities, as the object names them (NET_ADMIN); every other is dropped. */
  readonly capabilities: readonly string[];
  /** uid, gid; default the image's USER. */
  readonly user?: { uid: number; gid: number; groups?: number[] };
  readonly mounts: readonly Mount[];
  readonly readOnlyRoot: boolean;
  readonly noNewPrivileges: boolean;
  /** Resolve once the output shows this; reject if it does not within timeoutMs. */
  readonly waitFor: RegExp | string;
  readonly timeoutMs?: number;
}

export interface RunningContainer {
  readonly id: string;
  readonly proc: LabProcess<undefined>;
  /** The container's first process, as this host sees it. */
  readonly pid: number;
  /** SIGTERM, SIGKILL after graceMs; then deleted. Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
}

function parseUser(user: string): { uid: number; gid: number } {
  const [uid = "0", gid = uid] = user.split(":");
  if (!/^\d+$/.test(uid) || !/^\d+$/.test(gid)) {
    throw new Error(`image USER ${JSON.stringify(user)}: only numeric uid[:gid] is supported`);
  }
  return { uid: Number(uid), gid: Number(gid) };
}

/** The runtime's default mounts and protections (those of Docker's and CRI-O's defaults). */
const BASE_MOUNTS = [
  { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
  {
    destination: "/dev",
    type: "tmpfs",
    source: "tmpfs",
    options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
  },
  {
    destination: "/dev/pts",
    type: "devpts",
    source: "devpts",
    options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
  },
  {
    destination: "/dev/shm",
    type: "tmpfs",
    source: "shm",
    options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
  },
  { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec"] },
  {
    destination: "/sys",
    type: "sysfs",
    source: "sysfs",
    options: ["nosuid", "noexec", "nodev", "ro"],
  },
];
const MASKED = [
  "/proc/kcore",
  "/proc/keys",
  "/proc/timer_list",
  "/proc/sched_debug",
  "/sys/firmware",
];
const READ_ONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/** The OCI runtime configuration (config.json) of a container of `image`. */
export function ociConfig(
  image: Awaited<ReturnType<ImageStore["config"]>>,
  rootfs: string,
  spec: ContainerSpec,
  hostname: string,
) {
  const user = spec.user ?? parseUser(image.user);
  const caps = spec.capabilities.map((c) => `CAP_${c.toUpperCase()}`);
  const env = [...image.env, ...Object.entries(spec.env).map(([k, v]) => `${k}=${v}`)];
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: user.uid, gid: user.gid, additionalGids: spec.user?.groups ?? [] },
      args: [...image.entrypoint, ...spec.args],
      env,
      cwd: image.workingDir || "/",
      capabilities: {
        bounding: caps,
        effective: caps,
        permitted: caps,
        inheritable: [],
        ambient: [],
      },
      noNewPrivileges: spec.noNewPrivileges,
    },
    root: { path: rootfs, readonly: spec.readOnlyRoot },
    hostname,
    mounts: [
      ...BASE_MOUNTS,
      ...spec.mounts.map((m) =>
        m.source === undefined
          ? {
              destination: m.destination,
              type: "tmpfs",
              source: "tmpfs",
              options: ["nosuid", "nodev", "size=16m"],
            }
          : {
              destination: m.destination,
              type: "bind",
              source: m.source,
              options: ["rbind", "rprivate", ...(m.readOnly ? ["ro"] : ["rw"])],
            },
      ),
    ],
    linux: {
      namespaces: [
        { type: "pid" },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
        { type: "network", path: `/var/run/netns/${spec.ns}` },
      ],
      maskedPaths: MASKED,
      readonlyPaths: READ_ONLY,
    },
  };
}

/**
 * The OCI runtime: Debian's runc, which handles cgroups v1, v2 and hybrid machines alike
 * (crun 1.8 refuses hybrid ones, even with its cgroup manager disabled).
 */
export const OCI_RUNTIME = "runc";

/** Where the runtime keeps its containers' state: in the store, removed with it. */
export function runtimeRoot(store: ImageStore): string {
  return join(store.dir, "runtime");
}

/** Runs `image` with the OCI runtime in spec.ns until it prints spec.waitFor. */
export async function runContainer(
  store: ImageStore,
  image: string,
  name: string,
  spec: ContainerSpec,
): Promise<RunningContainer> {
  const runner = new ExecRunner({ timeoutMs: 30_000 });
  const global = ["--root", runtimeRoot(store)];
  const runtime = (args: readonly string[]) => runner.run(OCI_RUNTIME, [...global, ...args]);
  const { rootfs } = await store.mount(image);
  const bundle = join(store.dir, "bundles", name);
  await mkdir(bundle, { recursive: true });
  const config = ociConfig(await store.config(image), rootfs, spec, name);
  await writeFile(join(bundle, "config.json"), JSON.stringify(config, null, 2));
  const id = `keip-${process.pid}-${name}`;
  // The runtime itself runs here: `ip netns exec` would mount a /sys without the cgroups it
  // needs. The container alone enters the namespace, by the path in config.json.
  const proc = spawnTracked({
    name,
    ns: undefined,
    argv: [OCI_RUNTIME, ...global, "run", "--bundle", bundle, id],
    logFile: join(store.dir, `${name}.log`),
  });
  let stopped: Promise<void> | undefined;
  const stop = (graceMs = 5000) =>
    (stopped ??= (async () => {
      if (proc.running()) {
        await runtime(["kill", id, "SIGTERM"]).catch(() => {});
        const timer = setTimeout(
          () => void runtime(["kill", id, "SIGKILL"]).catch(() => {}),
          graceMs,
        );
        await proc.exited;
        clearTimeout(timer);
      }
      await runtime(["delete", "--force", id]).catch(() => {});
    })());
  try {
    await proc.waitFor(spec.waitFor, spec.timeoutMs ?? 60_000);
    const state = JSON.parse((await runtime(["state", id])).stdout) as { pid?: number };
    return { id, proc, pid: state.pid ?? -1, stop };
  } catch (err) {
    await stop(1000);
    throw err;
  }
}
