// The agent's gRPC API as TypeScript sees it: the service definition loaded from
// proto/eip_agent.proto (the seed's wire format plus our additions), typed messages, a
// client and the credentials both ends use.
import { readFileSync } from "node:fs";
import type { PeerCertificate } from "node:tls";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const PROTO_PATH = fileURLToPath(new URL("../../../proto/eip_agent.proto", import.meta.url));
export const DEFAULT_PORT = 6127;

export interface EipOpReq {
  action: string;
  eipAddr: string;
  vmiAddr: string;
}

export interface EipOpRsp {
  result: "Succeed" | "Failed";
  errPhase: number;
  reason: string;
}

export interface BindingInfo {
  eipAddr: string;
  vmiAddr: string;
  since: string;
  /** Saved, but not yet in the kernel: an apply failed and is retried. */
  pending: boolean;
  /** Counted by the kernel since the binding was made, as of the agent's last read. */
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  /** Absent from an agent that predates them (proto3 leaves an unset message out). */
  programmed?: BindingConditionInfo | null;
  announced?: BindingConditionInfo | null;
  readBackAt?: string;
}

export interface BindingConditionInfo {
  status: string;
  reason: string;
  message: string;
}

export interface ListBindingsReq {
  /** Only this EIP's binding; "" for all. */
  eipAddr?: string;
}

export interface ListBindingsRsp {
  bindings: BindingInfo[];
  inSync: boolean;
  lastError: string;
}

export interface BgpPeerInfo {
  address: string;
  asn: number;
  state: string;
  advertised: number;
  uptimeSeconds: number;
}

export interface ListBgpPeersRsp {
  enabled: boolean;
  peers: BgpPeerInfo[];
  announced: number;
  error: string;
}

const packageDefinition = protoLoader.loadSync(PROTO_PATH, {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

export const eipAgentService = (
  grpc.loadPackageDefinition(packageDefinition) as unknown as {
    protoc: { EipAgent: grpc.ServiceClientConstructor };
  }
).protoc.EipAgent;

export interface TlsFiles {
  /** CA that signed the peer's certificate. */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

function readOptional(path: string | undefined): Buffer | null {
  return path ? readFileSync(path) : null;
}

/** Checks the agent's certificate in place of the host name check; an Error refuses it. */
export type ServerCheck = (host: string, cert: PeerCertificate) => Error | undefined;

export function clientCredentials(
  tls: TlsFiles | undefined,
  checkServer?: ServerCheck,
): grpc.ChannelCredentials {
  if (!tls || (!tls.ca && !tls.cert && !tls.key)) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    readOptional(tls.ca),
    readOptional(tls.key),
    readOptional(tls.cert),
    checkServer ? { checkServerIdentity: checkServer } : {},
  );
}

/** A promise-returning client of one agent. */
export class AgentClient {
  private readonly client: grpc.Client & Record<string, unknown>;

  constructor(
    target: string,
    options: { tls?: TlsFiles; serverName?: string; checkServer?: ServerCheck } = {},
  ) {
    const channelOptions: grpc.ChannelOptions = options.serverName
      ? { "grpc.ssl_target_name_override": options.serverName }
      : {};
    this.client = new eipAgentService(
      target,
      clientCredentials(options.tls, options.checkServer),
      channelOptions,
    ) as grpc.Client & Record<string, unknown>;
  }

  eipOperate(req: EipOpReq, deadlineMs = 30_000): Promise<EipOpRsp> {
    return this.unary<EipOpRsp>("EipOperate", req, deadlineMs);
  }

  listBindings(deadlineMs = 30_000, req: ListBindingsReq = {}): Promise<ListBindingsRsp> {
    return this.unary<ListBindingsRsp>("ListBindings", req, deadlineMs);
  }

  listBgpPeers(deadlineMs = 30_000): Promise<ListBgpPeersRsp> {
    return this.unary<ListBgpPeersRsp>("ListBgpPeers", {}, deadlineMs);
  }

  close(): void {
    this.client.close();
  }

  private unary<T>(method: string, req: object, deadlineMs: number): Promise<T> {
    const fn = this.client[method] as (
      req: object,
      opts: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, rsp: T) => void,
    ) => void;
    return new Promise<T>((resolve, reject) => {
      fn.call(this.client, req, { deadline: Date.now() + deadlineMs }, (err, rsp) =>
        err ? reject(err) : resolve(rsp),
      );
    });
  }
}
