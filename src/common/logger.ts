// Structured JSON logs: a constant message, the data in fields. Greppable: the level by its
// name ("level":"info"), an error with its type, message and stack under `err` (pass the
// error itself, not its message), and a record about one Kubernetes object carries its
// `namespace` and `name` (objectFields; withLogFields adds them to every record logged while
// a piece of work on that object runs, by whatever code logs it).
import { AsyncLocalStorage } from "node:async_hooks";
import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";

const context = new AsyncLocalStorage<Record<string, unknown>>();

/** Runs fn with fields added to every record the loggers of createLogger write meanwhile. */
export function withLogFields<T>(fields: Record<string, unknown>, fn: () => T): T {
  return context.run({ ...context.getStore(), ...fields }, fn);
}

export function loggerOptions(component: string, level: string): LoggerOptions {
  return {
    level,
    base: { component },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    serializers: { err: pino.stdSerializers.err },
    // A copy: pino merges the record's own fields into what mixin returns.
    mixin: () => ({ ...context.getStore() }),
  };
}

/** Logs to stdout, or to destination (tests). */
export function createLogger(
  component: string,
  level: string,
  destination?: DestinationStream,
): Logger {
  return destination
    ? pino(loggerOptions(component, level), destination)
    : pino(loggerOptions(component, level));
}

/** The fields naming the object of a cache key: "namespace/name", or "name" (cluster-scoped). */
export function objectFields(key: string): { namespace?: string; name: string } {
  const slash = key.indexOf("/");
  return slash < 0 ? { name: key } : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}
