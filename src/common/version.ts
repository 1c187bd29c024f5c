// What `--version` prints for every binary: the package's version (package.json, next to
// dist/ in a checkout and in the images) and the commit the build was made from, which
// scripts/build-info.sh writes into dist/src/build-info.json at build time ("unknown" when
// the build had no git, or no such step ran).
import { readFileSync } from "node:fs";
import type { Command } from "commander";

export interface BuildInfo {
  readonly version: string;
  readonly commit: string;
}

function readJson(url: URL): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(readFileSync(url, "utf8"));
    return typeof v === "object" && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function stringOr(v: unknown, fallback: string): string {
  return typeof v === "string" && v !== "" ? v : fallback;
}

/** This file is dist/src/common/version.js; package.json is three folders up. */
export function buildInfo(
  packageJson = new URL("../../../package.json", import.meta.url),
  buildInfoJson = new URL("../build-info.json", import.meta.url),
): BuildInfo {
  return {
    version: stringOr(readJson(packageJson)?.["version"], "unknown"),
    commit: stringOr(readJson(buildInfoJson)?.["commit"], "unknown"),
  };
}

/** "eipctl 0.1.0 (commit 0123abc…)". */
export function versionLine(program: string, info: BuildInfo = buildInfo()): string {
  return `${program} ${info.version} (commit ${info.commit})`;
}

/** Adds --version (the version line of the command's name) to a command. */
export function withVersion(cmd: Command): Command {
  return cmd.version(
    versionLine(cmd.name()),
    "--version",
    "print the version and the commit it was built from",
  );
}
