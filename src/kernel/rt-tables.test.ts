import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ensureRouteTableName } from "./rt-tables.js";

describe("ensureRouteTableName", () => {
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "keip-rt-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("creates the directory and file when missing, then leaves it alone", async () => {
    const path = join(dir, "new", "iproute2", "rt_tables");
    assert.equal(await ensureRouteTableName(path), true);
    const text = await readFile(path, "utf8");
    assert.match(text, /^254\tmain$/m);
    assert.match(text, /^1001\teip_route$/m);
    assert.equal(await ensureRouteTableName(path), false);
    assert.equal(await readFile(path, "utf8"), text);
  });

  it("matches whole fields only and keeps the existing lines and mode", async () => {
    const path = join(dir, "rt_tables");
    const original = "255\tlocal\n10011 eip_route\n1001 eip_route2\n# 1001 eip_route\n100 other";
    await writeFile(path, original, { mode: 0o640 });
    assert.equal(await ensureRouteTableName(path, 1001, "eip_route"), true);
    assert.equal(await readFile(path, "utf8"), `${original}\n1001\teip_route\n`);
    assert.equal((await stat(path)).mode & 0o777, 0o640);
    assert.equal(await ensureRouteTableName(path, 1001, "eip_route"), false);
  });

  it("accepts an existing mapping in any spacing or in hex", async () => {
    const path = join(dir, "rt_tables.hex");
    await writeFile(path, "0x3e9   eip_route   # ours\n");
    assert.equal(await ensureRouteTableName(path), false);
  });
});
