// Adoption of the state the seed's agent (the Go kube-eip) left on a node: one JSON file
// per binding, /var/run/eip_agent/eip-<EIP>-<VMI IP>.metadata, with `exip`, `inip`,
// `status` ("Finished" or "Failed") and `phase`. Finished bindings are adopted; Failed
// ones were never fully applied and the operator retried them, so their partial kernel
// state is ours to clean up.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { canonicalIpv4 } from "../common/ipv4.js";
import type { Binding } from "../model/desired.js";

const NAME = /^eip-(.+)-(.+)\.metadata$/;

export interface SeedScan {
  readonly adopted: Binding[];
  readonly skipped: { readonly file: string; readonly reason: string }[];
}

export async function scanSeedState(dir: string): Promise<SeedScan> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { adopted: [], skipped: [] };
    throw err;
  }
  const adopted: Binding[] = [];
  const skipped: { file: string; reason: string }[] = [];
  const eips = new Set<string>();
  const vmis = new Set<string>();
  for (const name of names.sort()) {
    if (!NAME.test(name)) continue;
    const file = join(dir, name);
    let doc: unknown;
    try {
      doc = JSON.parse(await readFile(file, "utf8"));
    } catch (err) {
      skipped.push({ file, reason: `unreadable: ${(err as Error).message}` });
      continue;
    }
    const rec = typeof doc === "object" && doc !== null ? (doc as Record<string, unknown>) : {};
    const eip = typeof rec.exip === "string" ? canonicalIpv4(rec.exip) : undefined;
    const vmi = typeof rec.inip === "string" ? canonicalIpv4(rec.inip) : undefined;
    if (eip === undefined || vmi === undefined) {
      skipped.push({ file, reason: "exip or inip is not an IPv4 address" });
    } else if (rec.status !== "Finished") {
      skipped.push({ file, reason: `status is ${JSON.stringify(rec.status)}, not "Finished"` });
    } else if (eips.has(eip) || vmis.has(vmi)) {
      skipped.push({ file, reason: `${eip} or ${vmi} is already adopted from another file` });
    } else {
      eips.add(eip);
      vmis.add(vmi);
      adopted.push({ eip, vmi });
    }
  }
  return { adopted, skipped };
}
