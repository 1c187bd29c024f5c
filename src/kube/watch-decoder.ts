// The watch stream's decoding: newline-delimited JSON in chunks cut anywhere, each line one
// event; an ERROR event becomes its KubeApiError (client.ts's watch() raises it).
import { StringDecoder } from "node:string_decoder";
import { KubeApiError, isRecord } from "./api-error.js";

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK";

/** A decoded watch event; ERROR events are raised, not passed on. */
export interface WatchEvent {
  readonly type: WatchEventType;
  readonly object: Record<string, unknown>;
}

const WATCH_TYPES = new Set(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]);

/**
 * The watch stream's decoder: one JSON object per line, arriving in chunks cut anywhere (in a
 * line, in a UTF-8 sequence). push() returns the lines the chunk completed, for the caller to
 * parse one by one (parseWatchLine): an ERROR line then still comes after the events before
 * it in the same chunk.
 */
export class WatchDecoder {
  private readonly text = new StringDecoder("utf8");
  private buffer = "";

  push(chunk: Buffer | string): string[] {
    this.buffer += typeof chunk === "string" ? chunk : this.text.write(chunk);
    const lines = this.buffer.split("\n");
    this.buffer = lines.pop() ?? "";
    return lines.filter((line) => line.trim() !== "");
  }

  /** At the end of the stream: the last line if it lacked its newline. */
  end(): string[] {
    const rest = this.buffer + this.text.end();
    this.buffer = "";
    return rest.trim() === "" ? [] : [rest];
  }
}

/** One line of a watch stream; an ERROR event is thrown as its KubeApiError. */
export function parseWatchLine(line: string): WatchEvent {
  let ev: unknown;
  try {
    ev = JSON.parse(line);
  } catch {
    throw new Error(`watch: not JSON: ${line.slice(0, 200)}`);
  }
  if (!isRecord(ev) || typeof ev["type"] !== "string" || !WATCH_TYPES.has(ev["type"])) {
    throw new Error(`watch: not an event: ${line.slice(0, 200)}`);
  }
  const object = ev["object"];
  if (!isRecord(object)) throw new Error(`watch: event without an object: ${line.slice(0, 200)}`);
  if (ev["type"] === "ERROR") {
    const code = typeof object["code"] === "number" ? object["code"] : 500;
    throw KubeApiError.fromResponse(code, object, "watch");
  }
  return { type: ev["type"] as WatchEventType, object };
}
