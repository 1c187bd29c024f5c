// What the apiserver answers when it refuses: KubeApiError, built from its Status object
// (status code, reason, details), and the helpers that classify one (client.ts raises them).

/** A failure the apiserver answered, from its Status object. */
export class KubeApiError extends Error {
  override readonly name = "KubeApiError";

  constructor(
    /** HTTP status (the Status's code). */
    readonly status: number,
    /** The Status's reason (NotFound, Conflict, AlreadyExists, Expired, ...), or the HTTP status text. */
    readonly reason: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }

  /** From a response body (a Status object, or whatever a proxy on the way answered). */
  static fromResponse(httpStatus: number, body: unknown, what: string): KubeApiError {
    if (isRecord(body) && body["kind"] === "Status") {
      const code = typeof body["code"] === "number" ? body["code"] : httpStatus;
      const reason = typeof body["reason"] === "string" ? body["reason"] : "";
      const message = typeof body["message"] === "string" ? body["message"] : "";
      return new KubeApiError(
        code,
        reason || statusReason(code),
        `${what}: ${message || reason || code}`,
        body["details"],
      );
    }
    const text = typeof body === "string" ? body.slice(0, 200) : "";
    return new KubeApiError(
      httpStatus,
      statusReason(httpStatus),
      `${what}: HTTP ${httpStatus}${text ? ` ${text}` : ""}`,
    );
  }
}

/** The apiserver's reason for a code, for answers without a Status (metav1.StatusReason). */
function statusReason(code: number): string {
  const reasons: Record<number, string> = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
  };
  return reasons[code] ?? "Unknown";
}

function apiError(err: unknown): KubeApiError | undefined {
  return err instanceof KubeApiError ? err : undefined;
}

export function isNotFound(err: unknown): boolean {
  return apiError(err)?.status === 404;
}

/** A write with a stale resourceVersion (not an AlreadyExists, which is also a 409). */
export function isConflict(err: unknown): boolean {
  const e = apiError(err);
  return e?.status === 409 && e.reason !== "AlreadyExists";
}

export function isAlreadyExists(err: unknown): boolean {
  const e = apiError(err);
  return e?.status === 409 && e.reason === "AlreadyExists";
}

/** 410: a resourceVersion (of a watch, or a list's continue token) too old to be served. */
export function isGone(err: unknown): boolean {
  return apiError(err)?.status === 410;
}

/** A JSON object (not null, not an array). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
