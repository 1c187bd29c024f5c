// rt_tables: the name of our routing table. Owns one line of /etc/iproute2/rt_tables (or
// --rt-tables), `1001 eip_route`, so that `ip` shows table 1001 by name; every other line
// of the file is kept as it is. Written atomically (temporary file, rename).
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { randomBytes } from "node:crypto";
import { ROUTE_TABLE_ID, ROUTE_TABLE_NAME } from "../model/desired.js";

const RESERVED_TABLES =
  "#\n# reserved values\n#\n255\tlocal\n254\tmain\n253\tdefault\n0\tunspec\n#\n";

function parseTableId(text: string): number | undefined {
  if (/^0x[0-9a-f]+$/i.test(text)) return Number.parseInt(text.slice(2), 16);
  if (/^\d+$/.test(text)) return Number(text);
  return undefined;
}

/**
 * Makes sure `path` has a line mapping table `id` to `name`, so `ip` shows our table by name.
 * Creates the directory and file when missing (with the reserved names), appends the line
 * otherwise; never duplicates it; writes atomically (temp file + rename). Resolves to true
 * when it wrote the file.
 */
export async function ensureRouteTableName(
  path = "/etc/iproute2/rt_tables",
  id: number = ROUTE_TABLE_ID,
  name: string = ROUTE_TABLE_NAME,
): Promise<boolean> {
  let text: string;
  let mode = 0o644;
  try {
    text = await readFile(path, "utf8");
    mode = (await stat(path)).mode & 0o7777;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    text = RESERVED_TABLES;
  }
  for (const line of text.split("\n")) {
    const fields = line.replace(/#.*/, "").trim().split(/\s+/);
    if (fields.length >= 2 && parseTableId(fields[0] ?? "") === id && fields[1] === name) {
      return false;
    }
  }
  const next = `${text}${text === "" || text.endsWith("\n") ? "" : "\n"}${id}\t${name}\n`;
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await writeFile(temp, next, { mode });
    await chmod(temp, mode);
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw err;
  }
  return true;
}
