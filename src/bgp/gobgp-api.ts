// A typed, promise-returning client of the parts of gobgpd's v3 gRPC API (proto package
// apipb, protos from Debian's golang-github-osrg-gobgp-dev 3.10 in proto/gobgp/) the agent
// uses: start the speaker, manage peers, add, withdraw and list IPv4 unicast paths, and
// watch peer state. NLRI and path attributes travel as google.protobuf.Any; protobufjs
// packs a plain object carrying "@type" into an Any, and unpacks one back with `json`.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_DIR = fileURLToPath(new URL("../../../proto/gobgp/", import.meta.url));

const packageDefinition = protoLoader.loadSync(["gobgp.proto", "attribute.proto"], {
  includeDirs: [PROTO_DIR],
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  json: true,
});

const GobgpApi = (
  grpc.loadPackageDefinition(packageDefinition) as unknown as {
    apipb: { GobgpApi: grpc.ServiceClientConstructor };
  }
).apipb.GobgpApi;

const TYPE_URL = "type.googleapis.com/apipb.";
const IPV4_UNICAST = { afi: "AFI_IP", safi: "SAFI_UNICAST" };
/** BGP ORIGIN attribute value IGP. */
const ORIGIN_IGP = 0;

export interface GlobalConfig {
  readonly asn: number;
  readonly routerId: string;
  /** -1: the speaker does not listen (it connects out to its peers). */
  readonly listenPort: number;
}

export interface PeerConfig {
  readonly address: string;
  readonly asn: number;
  readonly port: number;
  readonly password: string;
  readonly holdTimeSec: number;
  readonly connectRetrySec: number;
  /** 0 disables graceful restart. */
  readonly gracefulRestartSec: number;
}

export type SessionState =
  "UNKNOWN" | "IDLE" | "CONNECT" | "ACTIVE" | "OPENSENT" | "OPENCONFIRM" | "ESTABLISHED";

export interface PeerStatus {
  readonly address: string;
  readonly asn: number;
  readonly state: SessionState;
  readonly adminDown: boolean;
  /** IPv4 unicast paths advertised to the peer (when asked for). */
  readonly advertised: number;
  /** Seconds since the session came up, 0 when it is not up. */
  readonly uptimeSec: number;
}

/** A peer's settings as gobgpd holds them: what the agent asked for, read back. */
export type PeerSettings = Omit<PeerConfig, "address" | "asn">;

/** A peer as ListPeer reports it: its state and its settings. */
export interface ListedPeer extends PeerStatus {
  readonly settings: PeerSettings;
}

/** A locally originated IPv4 unicast path as gobgpd lists it. */
export interface LocalPath {
  readonly prefix: string;
  readonly nextHop: string;
}

interface AnyMessage {
  "@type": string;
  [field: string]: unknown;
}

interface ApiPath {
  nlri: AnyMessage | null;
  pattrs: AnyMessage[];
  family: { afi: string; safi: string } | null;
  neighborIp: string;
  isFromExternal: boolean;
  sourceAsn: number;
}

interface ApiPeer {
  conf: {
    neighborAddress: string;
    peerAsn: number;
    adminDown: boolean;
    authPassword: string;
  } | null;
  state: { sessionState: SessionState; adminState: string } | null;
  gracefulRestart: { enabled: boolean; restartTime: number } | null;
  transport: { remotePort: number } | null;
  timers: {
    config: { holdTime: number; connectRetry: number } | null;
    state: { uptime: { seconds: number } | null } | null;
  } | null;
  afiSafis: {
    state: { advertised: number; family: { afi: string; safi: string } | null } | null;
  }[];
}

type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;
type Unary = (
  req: unknown,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: Callback<unknown>,
) => void;
type ServerStream = (
  req: unknown,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
) => grpc.ClientReadableStream<unknown>;
type ClientStream = (
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: Callback<unknown>,
) => grpc.ClientWritableStream<unknown>;

export function pathOf(prefix: string, nextHop: string): object {
  const [address, length] = prefix.split("/");
  return {
    family: IPV4_UNICAST,
    nlri: { "@type": `${TYPE_URL}IPAddressPrefix`, prefix: address, prefixLen: Number(length) },
    pattrs: [
      { "@type": `${TYPE_URL}OriginAttribute`, origin: ORIGIN_IGP },
      { "@type": `${TYPE_URL}NextHopAttribute`, nextHop },
    ],
  };
}

function localPathOf(path: ApiPath): LocalPath | undefined {
  // Paths learned from a peer carry its address; those added through the API do not.
  if (path.isFromExternal || (path.neighborIp !== "" && path.neighborIp !== "<nil>")) {
    return undefined;
  }
  if (path.sourceAsn !== 0) return undefined;
  const nlri = path.nlri;
  if (!nlri || !nlri["@type"].endsWith(".IPAddressPrefix")) return undefined;
  const nextHop = path.pattrs.find((a) => a["@type"].endsWith(".NextHopAttribute"));
  return {
    prefix: `${String(nlri.prefix)}/${Number(nlri.prefixLen)}`,
    nextHop: typeof nextHop?.nextHop === "string" ? nextHop.nextHop : "",
  };
}

function peerStatusOf(peer: ApiPeer): PeerStatus {
  const uptime = peer.timers?.state?.uptime?.seconds ?? 0;
  const state = peer.state?.sessionState ?? "UNKNOWN";
  return {
    address: peer.conf?.neighborAddress ?? "",
    asn: peer.conf?.peerAsn ?? 0,
    state,
    adminDown: peer.conf?.adminDown ?? false,
    // gobgpd 3.10 counts an End-of-RIB marker among the advertised paths of a peer with
    // graceful restart.
    advertised: Math.max(
      0,
      peer.afiSafis
        .filter((a) => a.state?.family?.afi === "AFI_IP" && a.state.family.safi === "SAFI_UNICAST")
        .reduce((sum, a) => sum + (a.state?.advertised ?? 0), 0) -
        (peer.gracefulRestart?.enabled ? 1 : 0),
    ),
    uptimeSec: state === "ESTABLISHED" && uptime > 0 ? Math.max(0, Date.now() / 1000 - uptime) : 0,
  };
}

function peerSettingsOf(peer: ApiPeer): PeerSettings {
  return {
    port: peer.transport?.remotePort ?? 0,
    password: peer.conf?.authPassword ?? "",
    holdTimeSec: peer.timers?.config?.holdTime ?? 0,
    connectRetrySec: peer.timers?.config?.connectRetry ?? 0,
    gracefulRestartSec: peer.gracefulRestart?.enabled ? peer.gracefulRestart.restartTime : 0,
  };
}

export class GobgpClient {
  private readonly client: grpc.Client & Record<string, unknown>;

  /** `target`: gobgpd's API, `unix:/path` of its socket or host:port. */
  constructor(
    readonly target: string,
    private readonly timeoutMs = 5000,
  ) {
    this.client = new GobgpApi(target, grpc.credentials.createInsecure(), {
      // gobgpd is local: find out quickly that it went away and reconnect as quickly.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1000,
    }) as grpc.Client & Record<string, unknown>;
  }

  close(): void {
    this.client.close();
  }

  private unary<T>(method: string, request: object, timeoutMs = this.timeoutMs): Promise<T> {
    const fn = (this.client[method] as Unary).bind(this.client);
    return new Promise<T>((resolve, reject) => {
      fn(request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, value) => {
        if (err) reject(new Error(`gobgpd ${method}: ${err.details || err.message}`));
        else resolve(value as T);
      });
    });
  }

  private collect<T>(method: string, request: object): Promise<T[]> {
    const fn = (this.client[method] as ServerStream).bind(this.client);
    return new Promise<T[]>((resolve, reject) => {
      const items: T[] = [];
      const call = fn(request, new grpc.Metadata(), { deadline: Date.now() + this.timeoutMs * 6 });
      call.on("data", (item: T) => items.push(item));
      call.on("error", (err: grpc.ServiceError) =>
        reject(new Error(`gobgpd ${method}: ${err.details || err.message}`)),
      );
      call.on("end", () => resolve(items));
    });
  }

  /** The global config; asn 0 when the speaker has not been started. */
  async getGlobal(timeoutMs?: number): Promise<{ asn: number; routerId: string }> {
    const rsp = await this.unary<{ global: { asn: number; routerId: string } | null }>(
      "GetBgp",
      {},
      timeoutMs,
    );
    return { asn: rsp.global?.asn ?? 0, routerId: rsp.global?.routerId ?? "" };
  }

  async startBgp(global: GlobalConfig): Promise<void> {
    await this.unary("StartBgp", {
      global: { asn: global.asn, routerId: global.routerId, listenPort: global.listenPort },
    });
  }

  /** `restarting` sets graceful restart's Restart State (and Forwarding State) bits. */
  async addPeer(peer: PeerConfig & { restarting?: boolean }): Promise<void> {
    const gr = peer.gracefulRestartSec > 0;
    await this.unary("AddPeer", {
      peer: {
        conf: { neighborAddress: peer.address, peerAsn: peer.asn, authPassword: peer.password },
        transport: { remotePort: peer.port },
        timers: {
          config: {
            holdTime: peer.holdTimeSec,
            keepaliveInterval: Math.max(1, Math.floor(peer.holdTimeSec / 3)),
            connectRetry: peer.connectRetrySec,
            idleHoldTimeAfterReset: peer.connectRetrySec,
          },
        },
        gracefulRestart: gr
          ? {
              enabled: true,
              restartTime: peer.gracefulRestartSec,
              localRestarting: peer.restarting === true,
            }
          : {},
        afiSafis: [
          {
            config: { family: IPV4_UNICAST, enabled: true },
            mpGracefulRestart: { config: { enabled: gr } },
          },
        ],
      },
    });
  }

  async deletePeer(address: string): Promise<void> {
    await this.unary("DeletePeer", { address });
  }

  async listPeers(): Promise<ListedPeer[]> {
    const rsps = await this.collect<{ peer: ApiPeer | null }>("ListPeer", {
      enableAdvertised: true,
    });
    return rsps.flatMap((r) =>
      r.peer ? [{ ...peerStatusOf(r.peer), settings: peerSettingsOf(r.peer) }] : [],
    );
  }

  async addPath(prefix: string, nextHop: string): Promise<void> {
    await this.unary("AddPath", { tableType: "GLOBAL", path: pathOf(prefix, nextHop) });
  }

  /** Adds many paths over one client stream, `batch` paths a message. */
  addPaths(prefixes: readonly string[], nextHop: string, batch = 500): Promise<void> {
    const fn = (this.client.AddPathStream as ClientStream).bind(this.client);
    return new Promise<void>((resolve, reject) => {
      const call = fn(
        new grpc.Metadata(),
        { deadline: Date.now() + this.timeoutMs * 12 },
        (err) => {
          if (err) reject(new Error(`gobgpd AddPathStream: ${err.details || err.message}`));
          else resolve();
        },
      );
      for (let i = 0; i < prefixes.length; i += batch) {
        call.write({
          tableType: "GLOBAL",
          paths: prefixes.slice(i, i + batch).map((p) => pathOf(p, nextHop)),
        });
      }
      call.end();
    });
  }

  /**
   * Withdraws one locally originated path. Always names the path: a DeletePath without one
   * withdraws every local path of the speaker, ours and anyone else's.
   */
  async deletePath(prefix: string, nextHop: string): Promise<void> {
    await this.unary("DeletePath", {
      tableType: "GLOBAL",
      family: IPV4_UNICAST,
      path: pathOf(prefix, nextHop),
    });
  }

  /** Every locally originated IPv4 unicast path in the global table. */
  async listLocalPaths(): Promise<LocalPath[]> {
    const rsps = await this.collect<{ destination: { paths: ApiPath[] } | null }>("ListPath", {
      tableType: "GLOBAL",
      family: IPV4_UNICAST,
    });
    const paths: LocalPath[] = [];
    for (const r of rsps) {
      for (const p of r.destination?.paths ?? []) {
        const local = localPathOf(p);
        if (local) paths.push(local);
      }
    }
    return paths;
  }

  /**
   * The IPv4 unicast prefixes in a peer's Adj-RIB-Out: what the speaker has sent that peer
   * (gobgpd keeps it for an established session; empty otherwise).
   */
  async listAdjOut(peer: string): Promise<string[]> {
    const rsps = await this.collect<{ destination: { prefix: string } | null }>("ListPath", {
      tableType: "ADJ_OUT",
      name: peer,
      family: IPV4_UNICAST,
    });
    return rsps.flatMap((r) => (r.destination ? [r.destination.prefix] : []));
  }

  /** Calls `onPeer` with each peer state change until the returned cancel() or an error. */
  watchPeers(onPeer: (peer: PeerStatus) => void, onEnd: (err?: Error) => void): () => void {
    const fn = (this.client.WatchEvent as ServerStream).bind(this.client);
    const call = fn({ peer: {} }, new grpc.Metadata(), {});
    let cancelled = false;
    call.on("data", (ev: { peer: { type: string; peer: ApiPeer | null } | null }) => {
      if (ev.peer?.type === "STATE" && ev.peer.peer) onPeer(peerStatusOf(ev.peer.peer));
    });
    call.on("error", (err: grpc.ServiceError) => {
      if (!cancelled) onEnd(new Error(err.details || err.message));
    });
    call.on("end", () => {
      if (!cancelled) onEnd();
    });
    return () => {
      cancelled = true;
      call.cancel();
    };
  }
}
