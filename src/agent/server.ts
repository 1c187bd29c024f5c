// The agent's gRPC face: the seed's EipOperate (a refusal is a reply with result "Failed"
// and a reason, as the seed did, never a gRPC error), ListBindings, and the standard
// health service. Handlers never throw: every outcome is an answer.
//
// A reply means what it says: "Succeed" once the change is saved and in the kernel;
// "Failed" with errPhase 0 (refused) or 6 and NotSavedError (the save failed) changed
// nothing; "Failed" with another phase was saved and stays wanted, the loop retries it,
// the reason says so and ListBindings shows the binding pending. Input is bounded: the
// server takes messages up to MAX_MESSAGE_BYTES and STREAMS_MAX calls per connection at
// once, and replies and logs echo a caller's input only cut short (request.ts).
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import {
  type EipOpReq,
  type EipOpRsp,
  type ListBindingsReq,
  type ListBindingsRsp,
  type ListBgpPeersRsp,
  eipAgentService,
} from "../common/agent-api.js";
import { canonicalIpv4 } from "../common/ipv4.js";
import { KernelError } from "../kernel/manager.js";
import type { PeerStatus } from "../bgp/gobgp-api.js";
import type { BindingTable } from "./binding-table.js";
import { type Dataplane, NotSavedError } from "./dataplane.js";
import type { AgentMetrics } from "./metrics.js";
import {
  type Access,
  type AllowList,
  type AuthContext,
  type Authorizer,
  callerName,
} from "./authz.js";
import type { NodeAddresses } from "./node-addresses.js";
import type { ReadBack } from "./readback.js";
import { ReloadingServerCredentials, readServerTls } from "./server-tls.js";
import { type Parsed, type RequestPolicy, parseRequest, shown } from "./request.js";
import type { TrafficMonitor } from "./traffic.js";
import { ZERO_TRAFFIC } from "../kernel/traffic.js";

export interface ServerTls {
  readonly cert: string;
  readonly key: string;
  /** Clients must present a certificate this CA signed. */
  readonly clientCa: string;
  /** And their certificate's CN must be allowed (authz.ts). */
  readonly allow: AllowList;
}

/** What the BGP speaker tells about itself, when BGP is on. */
export interface BgpStatus {
  peers(): Promise<PeerStatus[]>;
  announced(): number;
}

export interface AgentServerOptions {
  readonly table: BindingTable;
  readonly dataplane: Dataplane;
  readonly policy: RequestPolicy;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  readonly bgp?: BgpStatus;
  readonly now?: () => Date;
  /** The node's own addresses: a bind of one of them is refused. */
  readonly nodeAddresses?: NodeAddresses;
  /** Who may call what over TLS; without it every caller is served. */
  readonly authorizer?: Authorizer;
  /** What each binding's dataplane really does (ListBindings' conditions). */
  readonly readBack?: ReadBack;
  /** The last read of the traffic counters; without it (counting off) they show as 0. */
  readonly traffic?: Pick<TrafficMonitor, "counts">;
}

export class AgentService {
  constructor(private readonly opts: AgentServerOptions) {}

  /** Why this caller may not make a call of this kind (authz.ts); undefined when it may. */
  refusal(auth: AuthContext | null, access: Access): string | undefined {
    const reason = this.opts.authorizer?.refusal(auth, access);
    if (reason !== undefined) {
      this.opts.logger.warn({ caller: callerName(auth), access, reason }, "caller refused");
    }
    return reason;
  }

  async eipOperate(req: EipOpReq, auth: AuthContext | null = null): Promise<EipOpRsp> {
    const { table, dataplane, policy, logger, metrics } = this.opts;
    const denied = this.refusal(auth, "write");
    const parsed: Parsed =
      denied !== undefined
        ? { ok: false, reason: denied }
        : await this.checkNode(parseRequest(req, policy));
    const action = parsed.ok ? parsed.op.action : "invalid";
    const answer = (rsp: EipOpRsp): EipOpRsp => {
      metrics.requests.inc({ action, result: rsp.result });
      return rsp;
    };
    if (!parsed.ok) {
      logger.warn(
        {
          op: shown(req.action),
          eip: shown(req.eipAddr),
          vmi: shown(req.vmiAddr),
          reason: parsed.reason,
        },
        "request refused",
      );
      return answer(failed(0, parsed.reason));
    }
    const { eip, vmi } = parsed.op.binding;
    const outcome = table.propose(parsed.op, (this.opts.now?.() ?? new Date()).toISOString());
    if (outcome.kind === "conflict") {
      logger.warn({ op: action, eip, vmi, reason: outcome.reason }, "request refused");
      return answer(failed(0, outcome.reason));
    }
    if (outcome.kind === "unchanged" && dataplane.inSync) {
      logger.debug({ op: action, eip, vmi }, "already done");
      return answer(succeeded());
    }
    try {
      await dataplane.sync();
    } catch (err) {
      const kerr = err instanceof KernelError ? err : undefined;
      const cause = clip(kerr?.message ?? String(err));
      const reason =
        err instanceof NotSavedError
          ? `${cause}; nothing was changed`
          : `${cause}; ${action === "bind" ? RETRIED_BIND : RETRIED_UNBIND}`;
      logger.error({ op: action, eip, vmi, phase: kerr?.phase, err: cause }, "request failed");
      return answer(failed(kerr?.phase ?? 6, reason));
    }
    if (outcome.kind === "changed")
      logger.info({ op: action, eip, vmi }, action === "bind" ? "bound" : "unbound");
    return answer(succeeded());
  }

  /** Refuses a bind of an address the node holds for another purpose (node-addresses.ts). */
  private async checkNode(parsed: Parsed): Promise<Parsed> {
    const { nodeAddresses, table } = this.opts;
    if (!parsed.ok || parsed.op.action !== "bind" || nodeAddresses === undefined) return parsed;
    const { binding } = parsed.op;
    try {
      const reason = await nodeAddresses.refusal(binding, table.holdsEip(binding.eip));
      return reason === undefined ? parsed : { ok: false, reason };
    } catch (err) {
      return { ok: false, reason: `cannot read the node's addresses: ${(err as Error).message}` };
    }
  }

  /** Every binding, or only the one of `req.eipAddr` (none when it holds no such EIP). */
  listBindings(req: ListBindingsReq = {}): ListBindingsRsp {
    const { table, dataplane, readBack, traffic } = this.opts;
    const only = req.eipAddr ? (canonicalIpv4(req.eipAddr) ?? req.eipAddr) : undefined;
    const lastError = dataplane.error?.message;
    const bindings = table
      .list()
      .filter((b) => only === undefined || b.eip === only)
      .sort((a, b) => (a.eip < b.eip ? -1 : 1))
      .map((b) => {
        const pending = table.isPending(b.eip);
        const state = readBack?.stateOf(b, { pending, lastError });
        return {
          eipAddr: b.eip,
          vmiAddr: b.vmi,
          since: b.since,
          pending,
          // The last background read: a list never runs a command.
          ...(traffic?.counts(b.eip, b.vmi) ?? ZERO_TRAFFIC),
          ...(state
            ? {
                programmed: state.programmed,
                announced: state.announced,
                readBackAt: state.readBackAt,
              }
            : {}),
        };
      });
    return { bindings, inSync: dataplane.inSync, lastError: dataplane.error?.message ?? "" };
  }

  async listBgpPeers(): Promise<ListBgpPeersRsp> {
    const { bgp } = this.opts;
    if (!bgp) return { enabled: false, peers: [], announced: 0, error: "" };
    try {
      const peers = (await bgp.peers()).map((p) => ({
        address: p.address,
        asn: p.asn,
        state: p.state,
        advertised: p.advertised,
        uptimeSeconds: Math.floor(p.uptimeSec),
      }));
      return { enabled: true, peers, announced: bgp.announced(), error: "" };
    } catch (err) {
      return {
        enabled: true,
        peers: [],
        announced: bgp.announced(),
        error: (err as Error).message,
      };
    }
  }
}

const RETRIED_BIND =
  "the binding is saved and the agent retries until the kernel holds it (ListBindings shows it pending; an unbind gives it up)";
const RETRIED_UNBIND =
  "the unbind is saved and the agent retries until the kernel no longer holds the binding";

/** The longest kernel error a reply carries (a tool's stderr can be long). */
const CAUSE_MAX = 1024;

function clip(text: string): string {
  return text.length <= CAUSE_MAX ? text : `${text.slice(0, CAUSE_MAX)}... (cut)`;
}

/** The largest message the server takes: a request is a few dozen bytes. */
export const MAX_MESSAGE_BYTES = 64 * 1024;
/** Calls one connection may have open at once; more wait for one to end. */
export const STREAMS_MAX = 64;

function succeeded(): EipOpRsp {
  return { result: "Succeed", errPhase: 0, reason: "" };
}

function failed(errPhase: number, reason: string): EipOpRsp {
  return { result: "Failed", errPhase, reason };
}

export function serverCredentials(tls: ServerTls | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return new ReloadingServerCredentials(readServerTls(tls));
}

/** The gRPC error of a read-only method refused to this caller. */
function denied(
  service: AgentService,
  call: grpc.ServerUnaryCall<unknown, unknown>,
): grpc.ServiceError | null {
  const reason = service.refusal(call.getAuthContext(), "read");
  if (reason === undefined) return null;
  return Object.assign(new Error(reason), {
    code: grpc.status.PERMISSION_DENIED,
    details: reason,
    metadata: new grpc.Metadata(),
  });
}

/** Builds a grpc-js server with the agent service and the health service on it. */
export function buildGrpcServer(service: AgentService): {
  server: grpc.Server;
  health: HealthImplementation;
} {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_concurrent_streams": STREAMS_MAX,
  });
  server.addService(eipAgentService.service, {
    EipOperate: (
      call: grpc.ServerUnaryCall<EipOpReq, EipOpRsp>,
      callback: grpc.sendUnaryData<EipOpRsp>,
    ) => {
      service.eipOperate(call.request, call.getAuthContext()).then(
        (rsp) => callback(null, rsp),
        (err: unknown) => callback({ code: grpc.status.INTERNAL, details: String(err) }),
      );
    },
    ListBindings: (
      call: grpc.ServerUnaryCall<ListBindingsReq, ListBindingsRsp>,
      callback: grpc.sendUnaryData<ListBindingsRsp>,
    ) => {
      const err = denied(service, call);
      if (err) callback(err);
      else callback(null, service.listBindings(call.request));
    },
    ListBgpPeers: (
      call: grpc.ServerUnaryCall<object, ListBgpPeersRsp>,
      callback: grpc.sendUnaryData<ListBgpPeersRsp>,
    ) => {
      const err = denied(service, call);
      if (err) callback(err);
      else void service.listBgpPeers().then((rsp) => callback(null, rsp));
    },
  });
  const health = new HealthImplementation({ "": "NOT_SERVING", "protoc.EipAgent": "NOT_SERVING" });
  health.addToServer(server);
  return { server, health };
}

export function bindServer(
  server: grpc.Server,
  address: string,
  creds: grpc.ServerCredentials,
): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port)));
  });
}
