/** A flag or a combination of flags the agent refuses (config.ts says which and why). */
export class ConfigError extends Error {
  override name = "ConfigError";
}
