// The BGP part of eip_agent's command line (config.ts reads the flags): the settings of
// --bgp-type gobgp, checked together (peers, next hop and router id, where gobgpd's API is),
// and the BGP flags refused without it.
import type { PeerConfig } from "../bgp/gobgp-api.js";
import { ownApiSocket } from "../bgp/speaker.js";
import { ConfigError } from "./config-error.js";

/** Settings of --bgp-type gobgp. */
export interface BgpConfig {
  readonly localAs: number;
  readonly routerId: string;
  readonly nextHop: string;
  readonly peers: readonly PeerConfig[];
  /** -1: the speaker only connects out. */
  readonly listenPort: number;
  /** An existing gobgpd's API (unix:/path or host:port); undefined: the agent runs its own. */
  readonly endpoint: string | undefined;
  readonly gobgpdBinary: string;
  /** The API of the agent's gobgpd on this loopback port; undefined: on its Unix socket. */
  readonly apiPort: number | undefined;
}

/** --bgp-peer ADDRESS:AS, as parsed. */
export interface PeerFlag {
  address: string;
  asn: number;
}

/** The flags bgpConfig() reads. */
export interface BgpFlags {
  bgpType: "none" | "gobgp";
  nodeIp?: string;
  bgpLocalAs?: number;
  bgpPeer: PeerFlag[];
  bgpRouterId?: string;
  bgpNexthop?: string;
  bgpPeerPort: number;
  bgpPassword?: string;
  bgpHoldTime: number;
  bgpGracefulRestartTime: number;
  bgpListenPort: number;
  gobgpEndpoint?: string;
  gobgpdBinary: string;
  gobgpApiPort?: number;
  stateDir: string;
}

/** Flags that mean something only with --bgp-type gobgp (those without a default). */
const BGP_ONLY: readonly [keyof BgpFlags, string][] = [
  ["bgpLocalAs", "--bgp-local-as"],
  ["bgpRouterId", "--bgp-router-id"],
  ["bgpNexthop", "--bgp-nexthop"],
  ["bgpPassword", "--bgp-password"],
  ["gobgpEndpoint", "--gobgp-endpoint"],
  ["gobgpApiPort", "--gobgp-api-port"],
];

/** sun_path holds 108 bytes with the terminating NUL. */
const SOCKET_PATH_MAX = 107;

/** The BGP settings, or undefined with --bgp-type none; a ConfigError saying what is wrong. */
export function bgpConfig(o: BgpFlags): BgpConfig | undefined {
  if (o.bgpType === "none") {
    const given = BGP_ONLY.filter(([key]) => o[key] !== undefined).map(([, flag]) => flag);
    if (o.bgpPeer.length > 0) given.push("--bgp-peer");
    if (given.length > 0) {
      throw new ConfigError(`${given.join(", ")} given, but --bgp-type is none`);
    }
    return undefined;
  }
  if (o.bgpLocalAs === undefined) throw new ConfigError("--bgp-type gobgp needs --bgp-local-as");
  const routerId = o.bgpRouterId ?? o.nodeIp;
  const nextHop = o.bgpNexthop ?? o.nodeIp;
  if (!routerId || !nextHop) {
    throw new ConfigError(
      "--bgp-type gobgp needs --node-ip (or both --bgp-router-id and --bgp-nexthop)",
    );
  }
  const seen = new Set<string>();
  for (const p of o.bgpPeer) {
    if (seen.has(p.address)) throw new ConfigError(`--bgp-peer ${p.address} given twice`);
    seen.add(p.address);
  }
  const endpoint = o.gobgpEndpoint === undefined ? undefined : gobgpEndpoint(o.gobgpEndpoint);
  if (endpoint !== undefined && o.gobgpApiPort !== undefined) {
    throw new ConfigError(
      "--gobgp-api-port is for the gobgpd the agent runs, not with --gobgp-endpoint",
    );
  }
  if (endpoint === undefined && o.gobgpApiPort === undefined) {
    const socket = ownApiSocket(o.stateDir);
    if (Buffer.byteLength(socket) > SOCKET_PATH_MAX) {
      throw new ConfigError(
        `--state-dir is too long for gobgpd's API socket ${socket} (at most ${SOCKET_PATH_MAX} bytes)`,
      );
    }
  }
  return {
    localAs: o.bgpLocalAs,
    routerId,
    nextHop,
    peers: o.bgpPeer.map((p) => ({
      address: p.address,
      asn: p.asn,
      port: o.bgpPeerPort,
      password: o.bgpPassword ?? "",
      holdTimeSec: o.bgpHoldTime,
      // gobgpd waits 5 to 10 s between attempts whatever is asked; 5 is its floor.
      connectRetrySec: 5,
      gracefulRestartSec: o.bgpGracefulRestartTime,
    })),
    listenPort: o.bgpListenPort === 0 ? -1 : o.bgpListenPort,
    endpoint,
    gobgpdBinary: o.gobgpdBinary,
    apiPort: o.gobgpApiPort,
  };
}

/** unix:/path (or unix:///path, as gobgpd writes it) as unix:/path; host:port as it is. */
function gobgpEndpoint(value: string): string {
  const unix = /^unix:(?:\/\/)?(\/.*)$/.exec(value);
  if (unix?.[1] !== undefined) {
    if (Buffer.byteLength(unix[1]) > SOCKET_PATH_MAX) {
      throw new ConfigError(`--gobgp-endpoint: socket path longer than ${SOCKET_PATH_MAX} bytes`);
    }
    return `unix:${unix[1]}`;
  }
  if (/^[\w.-]+:\d{1,5}$|^\[[\da-f:]+\]:\d{1,5}$/i.test(value)) return value;
  throw new ConfigError(
    `--gobgp-endpoint ${JSON.stringify(value)} is neither unix:/ABSOLUTE/PATH nor HOST:PORT`,
  );
}
