// eipctl: a person's (or a script's) handle on one agent. The seed's flags behave as
// before; `--action list` shows what the agent holds, `--action peers` its BGP sessions. Exit codes scripts can rely on:
// 0 success, 1 the agent refused or failed (its reason on stderr), 2 usage error,
// 3 the agent could not be reached.
import { Command, CommanderError, Option } from "commander";
import type { ServiceError } from "@grpc/grpc-js";
import { AgentClient, type ListBgpPeersRsp, type ListBindingsRsp } from "../common/agent-api.js";
import { withVersion } from "../common/version.js";
import { normalizeGoFlags } from "../agent/config.js";
import { isLoopback } from "../agent/tls-config.js";

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

interface Options {
  target: string;
  eipIp?: string;
  vmiIp?: string;
  action?: "bind" | "unbind" | "list" | "peers";
  output: "table" | "json";
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
  insecure: boolean;
  timeout: number;
}

export function eipctlCommand(): Command {
  return new Command("eipctl")
    .description("Bind, unbind and list the elastic IPs of one kube-eip agent")
    .option(
      "--target <host:port>",
      "agent address (unix:/path for a local socket)",
      "127.0.0.1:6127",
    )
    .option("--eip-ip <ip>", "EIP address")
    .option("--vmi-ip <ip>", "VMI address")
    .addOption(
      new Option("--action <action>", "what to do").choices(["bind", "unbind", "list", "peers"]),
    )
    .addOption(
      new Option("--output <format>", "list output").choices(["table", "json"]).default("table"),
    )
    .option("--tls-ca <file>", "verify the agent's certificate with this CA (enables TLS)")
    .option("--tls-cert <file>", "client certificate (PEM)")
    .option("--tls-key <file>", "client key (PEM)")
    .option("--tls-server-name <name>", "name to verify in the agent's certificate")
    .option(
      "--insecure",
      "dial a TCP address other than loopback without TLS (the agent runs with --insecure)",
      false,
    )
    .option("--timeout <seconds>", "give up after this long", (v) => Number(v), 30)
    .addHelpText(
      "after",
      "\nExamples:\n  eipctl --action bind --eip-ip 192.168.18.100 --vmi-ip 10.244.1.10\n" +
        "  eipctl --target 172.16.0.11:6127 --action list --output json\n" +
        "\nExit status: 0 success, 1 refused or failed, 2 usage error, 3 agent unreachable.",
    );
}

/** Columns padded to their widest cell, the last left as it is. */
function columns(rows: readonly (readonly string[])[]): string[] {
  const count = rows[0]?.length ?? 0;
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows.map((r) =>
    r.map((c, i) => (i < count - 1 ? c.padEnd(widths[i] ?? 0) : c)).join("  "),
  );
}

function formatTable(rsp: ListBindingsRsp): string {
  const lines = columns([
    ["EIP", "VMI", "SINCE", "STATE", "RX BYTES", "TX BYTES", "RX PACKETS", "TX PACKETS"],
    ...rsp.bindings.map((b) => [
      b.eipAddr,
      b.vmiAddr,
      b.since,
      b.pending ? "pending" : "applied",
      String(b.rxBytes),
      String(b.txBytes),
      String(b.rxPackets),
      String(b.txPackets),
    ]),
  ]);
  if (!rsp.inSync)
    lines.push(`\nnot in sync with the kernel: ${rsp.lastError || "an apply is pending"}`);
  return lines.join("\n") + "\n";
}

function formatPeers(rsp: ListBgpPeersRsp): string {
  if (!rsp.enabled) return "BGP is off on this agent (--bgp-type none)\n";
  const lines = columns([
    ["PEER", "AS", "STATE", "UPTIME", "EIPS SENT"],
    ...rsp.peers.map((p) => [
      p.address,
      String(p.asn),
      p.state,
      p.uptimeSeconds > 0 ? `${p.uptimeSeconds}s` : "-",
      String(p.advertised),
    ]),
  ]);
  lines.push(`\n${rsp.announced} EIP(s) announced`);
  if (rsp.error) lines.push(`the BGP speaker cannot be asked: ${rsp.error}`);
  return lines.join("\n") + "\n";
}

/** The host of HOST:PORT or [HOST]:PORT. */
function targetHost(target: string): string {
  const host = target.slice(0, Math.max(0, target.lastIndexOf(":")));
  return host.replace(/^\[(.*)\]$/, "$1");
}

export async function runEipctl(argv: readonly string[], io: Io): Promise<number> {
  const cmd = withVersion(eipctlCommand())
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err });
  try {
    cmd.parse(normalizeGoFlags(argv), { from: "user" });
  } catch (err) {
    if (err instanceof CommanderError && err.exitCode === 0) return EXIT.ok;
    return EXIT.usage;
  }
  const o = cmd.opts<Options>();
  if (!o.action) {
    io.err("eipctl: --action is required (bind, unbind, list or peers)\n");
    return EXIT.usage;
  }
  if ((o.action === "bind" || o.action === "unbind") && (!o.eipIp || !o.vmiIp)) {
    io.err(`eipctl: --action ${o.action} needs --eip-ip and --vmi-ip\n`);
    return EXIT.usage;
  }
  if (!Number.isFinite(o.timeout) || o.timeout <= 0) {
    io.err("eipctl: --timeout must be a positive number of seconds\n");
    return EXIT.usage;
  }
  const tls =
    o.tlsCa || o.tlsCert || o.tlsKey ? { ca: o.tlsCa, cert: o.tlsCert, key: o.tlsKey } : undefined;
  const plaintextOk = o.target.startsWith("unix:") || isLoopback(targetHost(o.target));
  if (!tls && !plaintextOk && !o.insecure) {
    io.err(
      `eipctl: refusing to dial ${o.target} without TLS: give --tls-ca, --tls-cert and --tls-key, or --insecure\n`,
    );
    return EXIT.usage;
  }
  if (tls && o.insecure) {
    io.err("eipctl: --insecure contradicts the --tls flags\n");
    return EXIT.usage;
  }
  if (o.insecure) {
    io.err(
      `eipctl: warning: plaintext to ${o.target} (--insecure): anyone on the path can read and forge this call\n`,
    );
  }
  const client = new AgentClient(o.target, { tls, serverName: o.tlsServerName });
  try {
    if (o.action === "list") {
      const rsp = await client.listBindings(o.timeout * 1000);
      io.out(o.output === "json" ? JSON.stringify(rsp, null, 2) + "\n" : formatTable(rsp));
      return EXIT.ok;
    }
    if (o.action === "peers") {
      const rsp = await client.listBgpPeers(o.timeout * 1000);
      io.out(o.output === "json" ? JSON.stringify(rsp, null, 2) + "\n" : formatPeers(rsp));
      return rsp.error ? EXIT.failed : EXIT.ok;
    }
    const rsp = await client.eipOperate(
      { action: o.action, eipAddr: o.eipIp ?? "", vmiAddr: o.vmiIp ?? "" },
      o.timeout * 1000,
    );
    if (o.output === "json") io.out(JSON.stringify(rsp) + "\n");
    if (rsp.result === "Succeed") {
      if (o.output !== "json") io.out(`${o.action} ${o.eipIp} -> ${o.vmiIp}: Succeed\n`);
      return EXIT.ok;
    }
    io.err(
      `eipctl: ${o.action} failed (errPhase ${rsp.errPhase}): ${rsp.reason || "no reason given"}\n`,
    );
    return EXIT.failed;
  } catch (err) {
    const e = err as ServiceError;
    io.err(`eipctl: cannot reach the agent at ${o.target}: ${e.details || e.message}\n`);
    return EXIT.unreachable;
  } finally {
    client.close();
  }
}
