// Structured JSON logs: a constant message, the data in fields.
import { pino, type Logger } from "pino";

export function createLogger(component: string, level: string): Logger {
  return pino({ level, base: { component }, timestamp: pino.stdTimeFunctions.isoTime });
}
