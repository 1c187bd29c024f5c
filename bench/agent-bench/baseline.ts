import type { IptablesMode } from "../../src/kernel/iptables.js";
import { CommandError } from "../../src/kernel/runner.js";
import { Lab } from "../../src/lab/lab.js";
import { type Exec, type SeedNode, seedBind, seedSetup } from "../../src/lab/seed-agent.js";
import { now, round, sleep, stats } from "../common.js";
import { KernelCounts, countKernel, describeCounts, holds } from "./kernel.js";
import { Settings } from "./settings.js";
import {
  BASELINE_NODE,
  EIP_CIDR,
  EIP_PREFIX,
  GATEWAY_DEV,
  GATEWAY_IP,
  INTERNAL_NET,
  Pair,
  PhaseResult,
  errText,
  heldPair,
  nextProbe,
  runLoops,
} from "./shared.js";

export interface BaselineLevel {
  readonly held: number;
  readonly seq: PhaseResult;
  /** The seed's real rate: it ran one binding's commands at a time. */
  readonly seqBindsPerSec: number;
  readonly conc: PhaseResult;
  readonly lockRetries: number;
  readonly verified: boolean;
  readonly counts: KernelCounts;
}

export function seedNode(lab: Lab, mode: IptablesMode): SeedNode {
  return {
    iptables: `iptables-${mode}`,
    gatewayIp: GATEWAY_IP,
    gatewayDev: GATEWAY_DEV,
    eipCidr: EIP_CIDR,
    cniDev: lab.node(BASELINE_NODE).bridge,
    cniAddress: lab.node(BASELINE_NODE).bridgeAddress,
    internalNets: [INTERNAL_NET],
  };
}

/** Adds (or removes) bindings exactly as seedBind leaves them, in three commands. */
export async function seedBulk(
  lab: Lab,
  mode: IptablesMode,
  pairs: readonly Pair[],
  op: "add" | "del",
): Promise<void> {
  if (pairs.length === 0) return;
  const ipt = op === "add" ? "-A" : "-D";
  const sets = pairs.flatMap((p) => [
    `${op} kube-eip-eip ${p.eip} -exist`,
    `${op} kube-eip-vmi ${p.vmi} -exist`,
  ]);
  const nat = [
    "*nat",
    ...pairs.map((p) => `${ipt} KUBE-EIP-PREROUTING -d ${p.eip} -j DNAT --to-destination ${p.vmi}`),
    ...pairs.map(
      (p) =>
        `${ipt} KUBE-EIP-POSTROUTING -s ${p.vmi} -m set ! --match-set k8s_internal_net dst -j SNAT --to ${p.eip}`,
    ),
    "COMMIT",
  ];
  const ip = pairs.flatMap((p) => [
    `rule ${op} from ${p.vmi} table 1001 priority 1001`,
    `addr ${op} ${p.eip}/${EIP_PREFIX} dev ${GATEWAY_DEV}`,
  ]);
  await lab.nodeExec(BASELINE_NODE, ["ipset", "restore"], { input: sets.join("\n") + "\n" });
  await lab.nodeExec(BASELINE_NODE, [`iptables-${mode}-restore`, "--noflush", "-w", "5"], {
    input: nat.join("\n") + "\n",
  });
  await lab.nodeExec(BASELINE_NODE, ["ip", "-batch", "-"], { input: ip.join("\n") + "\n" });
}

export async function baselineLevels(
  lab: Lab,
  mode: IptablesMode,
  s: Settings,
  log: (line: string) => void,
): Promise<BaselineLevel[]> {
  const node = seedNode(lab, mode);
  let lockRetries = 0;
  const exec: Exec = async (argv) => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await lab.nodeExec(BASELINE_NODE, argv);
      } catch (err) {
        // The seed ran iptables without -w: under concurrency, do what -w would do.
        const locked =
          err instanceof CommandError && /xtables lock|holding the xtables/i.test(err.stderr);
        if (!locked || attempt >= 1000) throw err;
        lockRetries++;
        await sleep(2);
      }
    }
  };
  await seedSetup(exec, node);
  // Bulk removal of the seed's /N addresses deletes primaries: keep the secondaries.
  await lab.nodeExec(BASELINE_NODE, [
    "sysctl",
    "-q",
    "-w",
    `net.ipv4.conf.${GATEWAY_DEV}.promote_secondaries=1`,
  ]);
  const levels: BaselineLevel[] = [];
  const seqTimes: number[] = [];
  let held = 0;
  for (const n of s.baseHeld) {
    if (n > held) {
      await seedBulk(
        lab,
        mode,
        Array.from({ length: n - held }, (_, k) => heldPair(held + k)),
        "add",
      );
      held = n;
    }
    const before = await countKernel(lab, BASELINE_NODE, { mode, dataplane: "iptables" });
    if (!holds(before, n, false))
      throw new Error(`baseline preload wrong: ${describeCounts(before)}`);

    // Sequential: seedBind timed, then removed again untimed; N held throughout.
    const seq = await runLoops(s.baseSeqSamples, 1, s.baseSeqCapMs, async () => {
      const p = nextProbe();
      const t = now();
      let failure: string | undefined;
      try {
        await seedBind(exec, node, p.eip, p.vmi);
      } catch (err) {
        failure = errText(err);
      }
      const ms = now() - t;
      await seedBulk(lab, mode, [p], "del").catch(() => {});
      if (failure !== undefined) return failure;
      seqTimes.push(ms);
      return undefined;
    });
    // runLoops' own latency includes the untimed removal: use the bind times alone.
    const seqStats = stats(seqTimes.splice(0));
    const seqOnly: PhaseResult = { ...seq, latency: seqStats };
    const seqBindsPerSec = round(1000 / seqStats.mean);
    log(
      `  baseline ${n} held, sequential: bind p50 ${seqStats.p50} ms p99 ${seqStats.p99} ms, ${seqBindsPerSec} binds/s${seq.cappedByTime ? ` (capped at ${s.baseSeqCapMs / 1000} s: ${seq.issued} binds)` : ""}`,
    );

    // Concurrent: 32 loops of the seed's sequence, held rises to N+C; removed again after.
    const retriesBefore = lockRetries;
    const pairs = Array.from({ length: s.baseConcBinds }, () => nextProbe());
    const conc = await runLoops(pairs.length, s.concurrency, s.baseConcCapMs, async (k) => {
      const p = pairs[k] as Pair;
      await seedBind(exec, node, p.eip, p.vmi);
      return undefined;
    });
    const counts = await countKernel(lab, BASELINE_NODE, { mode, dataplane: "iptables" });
    const verified = holds(counts, n + conc.ok, false);
    log(
      `  baseline ${n} held, ${s.concurrency} loops: ${conc.perSec} binds/s, p50 ${conc.latency.p50} ms p99 ${conc.latency.p99} ms, ${conc.failures} failed, ${lockRetries - retriesBefore} lock retries${conc.cappedByTime ? ` (capped at ${s.baseConcCapMs / 1000} s: ${conc.issued} binds)` : ""}; kernel ${verified ? "verified" : `WRONG: ${describeCounts(counts)}`}`,
    );
    await seedBulk(lab, mode, pairs.slice(0, conc.issued), "del").catch(async () => {
      // A failed bind may have left only part of its state: remove one by one, ignoring gaps.
      for (const p of pairs.slice(0, conc.issued))
        await seedBulk(lab, mode, [p], "del").catch(() => {});
    });
    levels.push({
      held: n,
      seq: seqOnly,
      seqBindsPerSec,
      conc,
      lockRetries: lockRetries - retriesBefore,
      verified,
      counts,
    });
  }
  return levels;
}
