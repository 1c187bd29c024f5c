// The agent benchmark: how fast a real eip_agent binds, restores and how much memory it
// holds, next to the seed's per-binding command sequence (the BASELINE), on both iptables
// backends and the nftables dataplane; and, with the most bindings held, what the NAT costs
// packets (new connections to the first and the last EIP, iperf3 throughput against plain
// forwarding: see agent-bench/traffic.ts). It prints figures and never asserts on them.
//
//   node dist/bench/agent-bench.js [--quick] [--json FILE] [--backend nft|legacy|nftables|both|all[,...]]
//          [--resync-interval SECONDS] [--held N,N,...] [--phase-cap SECONDS] [--skip-baseline]
//
// Needs root. Everything happens inside a lab it builds itself (one per backend, torn down at
// the end, on failure and on SIGINT/SIGTERM too): kube-eip runs in node 1, the baseline in
// node 2, one after the other so they never compete for the CPU. Nothing is done in the host's
// network namespace; packets flow only between the lab's outside host and two lab VMIs.
//
// kube-eip, for each number of held bindings N:
// - restore: SIGKILL the agent, flush our kernel state in node 1, write N bindings into
//   <stateDir>/bindings.json, start the agent; the time from spawn until it logs "kernel
//   state restored" (pino's own timestamp, so our event loop never adds to it); then the
//   kernel is counted (every rule, set member, ip rule and address must be there);
// - sequential: one client binds a new EIP, then unbinds it, S times (N held throughout);
// - concurrent: 32 clients (one channel each) issue C binds between them, then unbind them
//   (N rises to N+C during the bind phase);
// - RSS: VmRSS after the restore (idle), after the load, and the peak (VmHWM), with the V8
//   heap in use from the agent's own metrics endpoint (127.0.0.1:9127 inside node 1);
// - profile: with the agent stopped, one bind and one unbind are applied by the agent's own
//   kernel managers in a child process inside node 1, every command timed (where a bind's
//   time goes), plus a full re-read (what each restore and each periodic resync costs), then
//   a cold restore by the same managers into a flushed kernel;
// - warm restore: start the agent again on a kernel that is already right (the common restart);
// - at the largest N only: before the profile, the connection rate and the throughput
//   (traffic.ts; the first and the last held binding lead to two real VMIs); after the warm
//   restore, another restore into a flushed kernel with --arp-poisoning (proxy entries and
//   host routes instead of addresses on the gateway device).
//
// Baseline, for N in 0 and 1,000: seedSetup once, N bindings loaded in bulk (the exact rules,
// set members, ip rules and addresses seedBind makes), then seedBind run command by command
// through `ip netns exec`: S sequential binds (each removed again, untimed), then C binds from
// 32 concurrent loops (held rises to N+C; removed again, untimed). The seed's agent ran its
// commands one at a time, so its real rate is the sequential one; the concurrent figure is
// what the same commands could do at best. Its iptables commands have no -w, so a legacy
// command that meets the xtables lock is retried (counted) as -w would. Both phases stop
// issuing at a time cap and say so.
import { type BackendResult, benchBackend } from "./agent-bench/backend.js";
import { writeFileSync } from "node:fs";
import os from "node:os";
import { defaultPrefix } from "../src/lab/lab.js";
import { listNamespaces } from "../src/lab/netns.js";
import { machine, now, round } from "./common.js";
import { connChild } from "./agent-bench/conn-child.js";
import { profileChild } from "./agent-bench/profile.js";
import { profileText, rows, table } from "./agent-bench/report.js";
import { parseSettings } from "./agent-bench/settings.js";
import { EIP_CIDR, GATEWAY_DEV, GATEWAY_IP, INTERNAL_NET } from "./agent-bench/shared.js";
import { variantName } from "./agent-bench/settings.js";

async function main(): Promise<number> {
  const s = parseSettings(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stderr.write(
      "agent-bench needs root: it builds network namespaces and runs the real kernel tools\n",
    );
    return 2;
  }
  const started = now();
  const m = machine();
  const base = defaultPrefix().replace(/^keip-/, "keip-bench-");
  const others = listNamespaces().filter((ns) => !ns.startsWith(base)).length;
  process.stdout.write(
    `kube-eip agent benchmark${s.quick ? " (--quick: a smoke run, figures not comparable to the targets)" : ""}\n` +
      Object.entries(m)
        .map(([k, v]) => `  ${k.padEnd(9)} ${v}`)
        .join("\n") +
      `\n  other network namespaces on this host at start: ${others}\n` +
      `  agent: --eip-cidr ${EIP_CIDR} --gateway-ip ${GATEWAY_IP} --gateway-dev ${GATEWAY_DEV} --internal-net ${INTERNAL_NET} --resync-interval ${s.resyncIntervalSec} --log-level info, state on ${os.tmpdir()} (fsync'd)\n` +
      `  held ${s.agentHeld.join("/")} (baseline ${s.baseHeld.join("/")}); ${s.seqSamples} sequential binds+unbinds (baseline ${s.baseSeqSamples}); ${s.concBinds} binds from ${s.concurrency} clients (baseline ${s.baseConcBinds})\n\n`,
  );
  const results: BackendResult[] = [];
  for (const [i, variant] of s.backends.entries()) {
    // The seed's sequence depends on the iptables backend only: once per backend.
    const sibling = results.find((r) => r.variant.mode === variant.mode && r.baseline.length > 0);
    const r = await benchBackend(variant, s, `${base}${i}`, !s.skipBaseline && !sibling);
    results.push(
      sibling && r.baseline.length === 0
        ? { ...r, baseline: sibling.baseline, baselineOf: variantName(sibling.variant) }
        : r,
    );
  }
  const wallSec = round((now() - started) / 1000);
  for (const r of results) {
    process.stdout.write(
      `\n== ${variantName(r.variant)} (lab ${r.labPrefix}, ${r.wallSec} s) ==\n`,
    );
    if (r.error) process.stdout.write(`FAILED: ${r.error}\n`);
    if (r.baselineOf)
      process.stdout.write(`(baseline: ${r.baselineOf}'s, same iptables backend)\n`);
    process.stdout.write(table(rows(r, s)) + "\n");
    const profiled = r.agent.filter((a) => a.profile !== undefined);
    const last = profiled[profiled.length - 1]?.profile;
    if (last) process.stdout.write("\n" + profileText(last, r.variant) + "\n");
  }
  const left = listNamespaces().filter((ns) => ns.startsWith(base));
  process.stdout.write(
    `\ntotal ${wallSec} s; load average now ${os
      .loadavg()
      .map((x) => round(x, 2))
      .join(" ")}; ` + `lab namespaces left: ${left.length === 0 ? "none" : left.join(", ")}\n`,
  );
  if (s.jsonFile) {
    writeFileSync(
      s.jsonFile,
      JSON.stringify({ machine: m, settings: s, wallSec, results }, null, 2) + "\n",
    );
    process.stdout.write(`figures written to ${s.jsonFile}\n`);
  }
  return results.some((r) => r.error) || left.length > 0 ? 1 : 0;
}

if (process.argv[2] === "--profile-child") {
  await profileChild(process.argv.slice(3));
} else if (process.argv[2] === "--conn-child") {
  await connChild(process.argv.slice(3));
} else {
  process.exitCode = await main();
}
