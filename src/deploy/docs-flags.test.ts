// The flag tables in docs/ are the binaries' own: every flag that `--help` lists is in a
// table of the binary's pages, and every flag in those tables is one `--help` lists.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const REPO_ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const BIN = fileURLToPath(new URL("../bin", import.meta.url));

/** Each binary and the pages whose tables document its flags. */
const PAGES: Record<string, readonly string[]> = {
  eip_agent: ["agent.md", "bgp-and-arp.md"],
  "eip-operator": ["operator.md"],
  eipctl: ["eipctl.md"],
};
/** Commander's own, documented once for all in each page's binary section. */
const BUILT_IN = new Set(["--help", "--version"]);

/** The flags of `--help`: commander's option lines start with two spaces and the flag. */
export function helpFlags(help: string): Set<string> {
  const flags = new Set<string>();
  for (const m of help.matchAll(/^ {2}(?:-\w, )?(--[a-z0-9-]+)/gm)) {
    if (m[1] && !BUILT_IN.has(m[1])) flags.add(m[1]);
  }
  return flags;
}

/** The flags named in the first cell of the markdown tables' rows. */
export function tableFlags(markdown: string): Set<string> {
  const flags = new Set<string>();
  for (const row of markdown.split("\n").filter((l) => l.startsWith("| `--"))) {
    const first = row.split("|")[1] ?? "";
    for (const m of first.matchAll(/`(--[a-z0-9-]+)/g)) if (m[1]) flags.add(m[1]);
  }
  return flags;
}

for (const [binary, pages] of Object.entries(PAGES)) {
  test(`${binary}: the flag tables of docs/${pages.join(", docs/")} are its --help`, async () => {
    const { stdout } = await run(process.execPath, [join(BIN, `${binary}.js`), "--help"], {
      timeout: 30_000,
    });
    const help = helpFlags(stdout);
    assert.ok(help.size > 5, `read ${help.size} flags from --help`);
    const documented = new Set<string>();
    for (const page of pages) {
      const text = await readFile(join(REPO_ROOT, "docs", page), "utf8");
      for (const f of tableFlags(text)) documented.add(f);
    }
    assert.deepEqual(
      { undocumented: [...help].filter((f) => !documented.has(f)).sort() },
      { undocumented: [] },
    );
    assert.deepEqual(
      { unknown: [...documented].filter((f) => !help.has(f)).sort() },
      { unknown: [] },
    );
  });
}

test("tableFlags reads every flag of a row's first cell, and only of the first", () => {
  const md = "| `--a`, `--b-c` | 1 | not `--d` |\n| flag | x |\n| `--e` | | |";
  assert.deepEqual([...tableFlags(md)].sort(), ["--a", "--b-c", "--e"]);
});
