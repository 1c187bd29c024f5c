// IptablesManager against the real iptables 1.8 (legacy and nft backends), inside a
// throwaway network namespace per backend (needs root).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  CHAIN_FORWARD,
  CHAIN_POSTROUTING,
  CHAIN_PREROUTING,
  type Binding,
} from "../model/desired.js";
import { JUMPS, RETIRED_JUMPS, plan, type PlanConfig } from "../model/plan.js";
import { TEST_BINDINGS, TEST_PLAN_CONFIG } from "../model/test-plan-config.js";
import { RecordingRunner } from "./fake-runner.js";
import { IpsetManager } from "./ipset.js";
import { IptablesManager, type IptablesMode } from "./iptables.js";
import { inspectIptablesBackends } from "./iptables-mode.js";
import { createNetns, deleteNetns, type NetnsRunner } from "./netns-runner.js";
import { ExecRunner } from "./runner.js";

const notRoot = process.getuid?.() !== 0;

const CONFIG: PlanConfig = { ...TEST_PLAN_CONFIG, internalNets: ["10.244.0.0/16", "10.96.0.0/12"] };

const PAIR = TEST_BINDINGS;

/** kube-proxy-like rules that are not ours and must survive everything. */
const FOREIGN = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 10.0.0.1/32 -j RETURN
COMMIT
*filter
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
`;

/** Our chains: the three per-binding ones and the hairpin chain. */
const OURS = new Set(plan(CONFIG, []).chains.map((chain) => chain.name));

for (const mode of ["legacy", "nft"] as const satisfies readonly IptablesMode[]) {
  describe(
    `IptablesManager (${mode}) in a network namespace`,
    { skip: notRoot ? "needs root" : false },
    () => {
      const host = new ExecRunner();
      let ns: NetnsRunner;
      let runner: RecordingRunner;
      let ipsets: IpsetManager;
      let m: IptablesManager;
      let foreignBefore: string[];

      /** All rule lines of a table as iptables-save prints them. */
      async function save(table: "nat" | "filter" | "mangle"): Promise<string[]> {
        const { stdout } = await ns.run(`iptables-${mode}-save`, ["-t", table]);
        return stdout.split("\n").filter((line) => line.startsWith("-A ") || line.startsWith(":"));
      }

      /** The lines that are not ours: other chains' rules, minus our jumps. */
      async function foreign(): Promise<string[]> {
        const jumps = plan(CONFIG, []).jumps.map((j) => `-A ${j.chain} ${j.rule}`);
        const lines = [
          ...(await save("nat")),
          ...(await save("filter")),
          ...(await save("mangle")),
        ];
        return lines.filter((line) => {
          const chain = line.split(" ")[line.startsWith(":") ? 0 : 1]?.replace(/^:/, "") ?? "";
          return !OURS.has(chain) && !jumps.includes(line);
        });
      }

      /** Asserts the kernel holds exactly `bindings`' rules in our chains and one of each jump. */
      async function assertExactly(bindings: readonly Binding[]): Promise<void> {
        const desired = plan(CONFIG, bindings);
        const lines = [
          ...(await save("nat")),
          ...(await save("filter")),
          ...(await save("mangle")),
        ];
        for (const spec of desired.chains) {
          const held = lines.filter((line) => line.startsWith(`-A ${spec.name} `)).sort();
          assert.deepEqual(
            held,
            spec.rules.map((rule) => `-A ${spec.name} ${rule}`).sort(),
            spec.name,
          );
        }
        for (const jump of desired.jumps) {
          const copies = lines.filter((line) => line === `-A ${jump.chain} ${jump.rule}`).length;
          assert.equal(copies, 1, `${jump.chain} ${jump.rule}`);
        }
        assert.deepEqual(await foreign(), foreignBefore);
      }

      before(async () => {
        ns = await createNetns(host);
        runner = new RecordingRunner(ns);
        await ns.run(`iptables-${mode}-restore`, ["--noflush"], { input: FOREIGN });
        foreignBefore = await foreign();
        // Rules name the sets, which must exist first (as in the agent).
        ipsets = new IpsetManager(ns);
        m = new IptablesManager(runner, { mode });
      });

      after(async () => {
        if (ns !== undefined) await deleteNetns(host, ns.netns);
      });

      async function apply(bindings: readonly Binding[], reread = false): Promise<number> {
        const desired = plan(CONFIG, bindings);
        ipsets.setDesired(desired.ipsets);
        await ipsets.apply({ reread: false });
        m.setDesired(desired);
        runner.clear();
        return m.apply({ reread });
      }

      it("builds our chains and jumps, leaving foreign rules alone", async () => {
        // 5 chains (3 per-binding, hairpin, the empty mangle TX one), 8 rules, 6 jumps.
        assert.equal(await apply(PAIR), 19);
        assert.deepEqual(runner.lines(), [
          `iptables-${mode}-save -t nat`,
          `iptables-${mode}-save -t filter`,
          `iptables-${mode}-save -t mangle`,
          `iptables-${mode}-restore --noflush -w 5`,
        ]);
        await assertExactly(PAIR);
        // Jumps sit on top of the built-in chains, in JUMPS order.
        const filter = await save("filter");
        assert.deepEqual(
          filter.filter((line) => line.startsWith("-A FORWARD ")).slice(0, 2),
          plan(CONFIG, [])
            .jumps.filter((j) => j.chain === "FORWARD")
            .map((j) => `-A FORWARD ${j.rule}`),
        );
      });

      it("writes nothing the second time, with or without a re-read", async () => {
        assert.equal(await apply(PAIR), 0);
        assert.deepEqual(runner.lines(), []);
        assert.equal(await apply(PAIR, true), 0);
        const fresh = new IptablesManager(ns, { mode });
        fresh.setDesired(plan(CONFIG, PAIR));
        assert.equal(await fresh.apply({ reread: false }), 0);
      });

      it("unbinding 10.0.0.1 removes exactly its rules (not 10.0.0.11's)", async () => {
        assert.equal(await apply(PAIR.slice(1)), 3);
        const input = runner.calls[0]?.input ?? "";
        assert.deepEqual(
          input.split("\n").filter((l) => l.startsWith("-")),
          [
            `-D ${CHAIN_PREROUTING} -d 192.168.18.100/32 -j DNAT --to-destination 10.0.0.1`,
            `-D ${CHAIN_POSTROUTING} -s 10.0.0.1/32 -m set ! --match-set k8s_internal_net dst -j SNAT --to-source 192.168.18.100`,
            `-D ${CHAIN_FORWARD} -d 10.0.0.1/32 -m conntrack --ctstate DNAT --ctorigdst 192.168.18.100 -j ACCEPT`,
          ],
        );
        await assertExactly(PAIR.slice(1));
      });

      it("binding again writes only its own lines", async () => {
        assert.equal(await apply(PAIR), 3);
        assert.equal(runner.calls.length, 1);
        await assertExactly(PAIR);
      });

      it("repairs drift on a re-read", async () => {
        const legacyOrNft = `iptables-${mode}`;
        await ns.run(legacyOrNft, ["-t", "nat", "-F", CHAIN_PREROUTING]);
        await ns.run(legacyOrNft, [
          "-t",
          "nat",
          "-A",
          CHAIN_POSTROUTING,
          "-s",
          "10.0.0.99/32",
          "-j",
          "RETURN",
        ]);
        const forwardJump = JUMPS.find((j) => j.rule.endsWith(`-j ${CHAIN_FORWARD}`));
        await ns.run(legacyOrNft, ["-D", "FORWARD", ...(forwardJump?.rule.split(" ") ?? [])]);
        // The seed's FORWARD accept of everything from a bound VMI: retired, so it goes.
        const seedAccept = RETIRED_JUMPS[0]?.rule.split(" ") ?? [];
        await ns.run(legacyOrNft, ["-I", "FORWARD", ...seedAccept]);
        await ns.run(legacyOrNft, [
          "-t",
          "nat",
          "-A",
          "POSTROUTING",
          "-m",
          "set",
          "--match-set",
          "kube-eip-vmi",
          "src",
          "-j",
          CHAIN_POSTROUTING,
        ]);
        assert.equal(await apply(PAIR), 0, "the belief hides drift until a re-read");
        // 2 DNAT rules, the foreign rule in our chain, the missing jump, the extra jump copy,
        // the seed's rule.
        assert.equal(await apply(PAIR, true), 6);
        await assertExactly(PAIR);
      });

      it("handles a 10.0.0.1 / 10.0.0.11 swap exactly", async () => {
        const swapped: Binding[] = [
          { eip: "192.168.18.100", vmi: "10.0.0.11" },
          { eip: "192.168.18.101", vmi: "10.0.0.1" },
        ];
        assert.equal(await apply(swapped), 12);
        await assertExactly(swapped);
        assert.equal(await apply(swapped, true), 0);
      });

      it("reports a failed restore as Phase.Nat and re-reads afterwards", async () => {
        await apply(PAIR);
        m.setDesired({
          chains: [
            {
              table: "nat",
              name: CHAIN_PREROUTING,
              rules: ["-m set --match-set no-such-set dst -j RETURN"],
            },
          ],
          jumps: [],
        });
        await assert.rejects(m.apply({ reread: false }), { name: "KernelError", phase: 2 });
        // Nothing was written: the restore is one transaction per table.
        assert.equal(await apply(PAIR), 0);
        assert.ok(runner.lines().includes(`iptables-${mode}-save -t nat`));
        await assertExactly(PAIR);
      });

      it(`detects the ${mode} backend from where the rules are`, async () => {
        assert.equal((await inspectIptablesBackends(ns, "auto")).mode, mode);
      });
    },
  );
}
