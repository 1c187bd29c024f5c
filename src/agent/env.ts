// eip_agent's settings from the environment, for the container: the DaemonSet passes the
// ConfigMap eip-agent-cm through AGENT_* variables (the seed's six, and one for each newer
// setting), and this turns them into the agent's own flags, so the flags stay the one
// place where settings are read and checked (config.ts).
//
// Rules: a variable that is unset, empty or only blanks means "not set" (the flag's default
// applies), so a ConfigMap key left empty, or a key a ConfigMap of the seed's version does
// not have, changes nothing. Lists (networks, BGP peers) are separated by commas or
// blanks. A switch takes true or false.

/** How one variable becomes flags. */
export type EnvKind = "value" | "list" | "switch";

export interface EnvSetting {
  readonly env: string;
  readonly flag: string;
  readonly kind: EnvKind;
}

const setting = (env: string, flag: string, kind: EnvKind = "value"): EnvSetting => ({
  env,
  flag,
  kind,
});

/**
 * Every variable the container reads, in the order its flags are given. The seed's names
 * come first; the others are AGENT_ and the flag's name (--bgp-local-as: AGENT_BGP_LOCAL_AS),
 * lists in the plural (AGENT_BGP_PEERS).
 */
export const ENV_SETTINGS: readonly EnvSetting[] = [
  // The seed's ConfigMap keys svc_net, pod_net, eip_net, eip_gw_ip, eip_gw_dev, log_level.
  setting("AGENT_SVC_NET", "--internal-net", "list"),
  setting("AGENT_POD_NET", "--internal-net", "list"),
  setting("AGENT_EIP_NET", "--eip-cidr"),
  setting("AGENT_EIP_GW_IP", "--gateway-ip"),
  setting("AGENT_EIP_GW_DEV", "--gateway-dev"),
  setting("AGENT_LOG_LEVEL", "--log-level"),
  setting("AGENT_PORT", "--port"),
  setting("AGENT_LISTEN_ADDRESS", "--listen-address"),
  setting("AGENT_UNIX_SOCKET", "--unix-socket"),
  setting("AGENT_NODE_IP", "--node-ip"),
  setting("AGENT_BGP_TYPE", "--bgp-type"),
  setting("AGENT_BGP_LOCAL_AS", "--bgp-local-as"),
  setting("AGENT_BGP_PEERS", "--bgp-peer", "list"),
  setting("AGENT_BGP_ROUTER_ID", "--bgp-router-id"),
  setting("AGENT_BGP_NEXTHOP", "--bgp-nexthop"),
  setting("AGENT_BGP_PEER_PORT", "--bgp-peer-port"),
  setting("AGENT_BGP_PASSWORD", "--bgp-password"),
  setting("AGENT_BGP_HOLD_TIME", "--bgp-hold-time"),
  setting("AGENT_BGP_GRACEFUL_RESTART_TIME", "--bgp-graceful-restart-time"),
  setting("AGENT_BGP_LISTEN_PORT", "--bgp-listen-port"),
  setting("AGENT_GOBGP_ENDPOINT", "--gobgp-endpoint"),
  setting("AGENT_GOBGPD_BINARY", "--gobgpd-binary"),
  setting("AGENT_GOBGP_API_PORT", "--gobgp-api-port"),
  setting("AGENT_ARP_POISONING", "--arp-poisoning", "switch"),
  setting("AGENT_GARP_COUNT", "--garp-count"),
  setting("AGENT_STATE_DIR", "--state-dir"),
  setting("AGENT_RECOVER_FROM_KERNEL", "--recover-from-kernel", "switch"),
  setting("AGENT_SEED_STATE_DIR", "--seed-state-dir"),
  setting("AGENT_CNI_DEV", "--cni-dev"),
  setting("AGENT_IPTABLES_MODE", "--iptables-mode"),
  setting("AGENT_DATAPLANE", "--dataplane"),
  setting("AGENT_RESYNC_INTERVAL", "--resync-interval"),
  setting("AGENT_TRAFFIC_INTERVAL", "--traffic-interval"),
  setting("AGENT_COMMAND_TIMEOUT", "--command-timeout"),
  setting("AGENT_STALL_TIMEOUT", "--stall-timeout"),
  setting("AGENT_RT_TABLES", "--rt-tables"),
  setting("AGENT_PROC_SYS", "--proc-sys"),
  setting("AGENT_METRICS_ADDRESS", "--metrics-address"),
  setting("AGENT_TLS_CERT", "--tls-cert"),
  setting("AGENT_TLS_KEY", "--tls-key"),
  setting("AGENT_TLS_CLIENT_CA", "--tls-client-ca"),
  setting("AGENT_TLS_ALLOWED_CLIENTS", "--tls-allowed-client", "list"),
  setting("AGENT_TLS_ALLOWED_READERS", "--tls-allowed-reader", "list"),
  setting("AGENT_INSECURE", "--insecure", "switch"),
];

/** Values that must not be printed. */
const SECRET_ENV = new Set(["AGENT_BGP_PASSWORD"]);

export class EnvError extends Error {
  override name = "EnvError";
}

/** One flag that came from a variable, for the log and for error messages. */
export interface EnvArg {
  readonly env: string;
  readonly flag: string;
  /** The value as given, or "<hidden>" for a secret. */
  readonly shown: string;
}

export interface EnvArgs {
  readonly argv: string[];
  readonly used: EnvArg[];
}

/** The agent's flags for the variables that are set; throws EnvError on a bad switch. */
export function agentArgsFromEnv(env: Readonly<Record<string, string | undefined>>): EnvArgs {
  const argv: string[] = [];
  const used: EnvArg[] = [];
  for (const s of ENV_SETTINGS) {
    const raw = (env[s.env] ?? "").trim();
    if (raw === "") continue;
    const shown = SECRET_ENV.has(s.env) ? "<hidden>" : raw;
    if (s.kind === "switch") {
      const value = raw.toLowerCase();
      if (value !== "true" && value !== "false") {
        throw new EnvError(`${s.env}=${JSON.stringify(raw)}: must be true or false`);
      }
      if (value === "true") argv.push(s.flag);
      used.push({ env: s.env, flag: s.flag, shown: value });
      continue;
    }
    const values = s.kind === "list" ? raw.split(/[\s,]+/).filter((v) => v !== "") : [raw];
    // `--flag=value`: a value that starts with a dash stays a value.
    for (const v of values) argv.push(`${s.flag}=${v}`);
    used.push({ env: s.env, flag: s.flag, shown });
  }
  return { argv, used };
}
