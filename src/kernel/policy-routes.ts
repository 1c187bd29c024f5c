// PolicyRoutes: RouteManager's part (iproute.ts) that owns the policy routing of bound VMIs.
//
// What it owns:
// - every route of table 1001: the table holds exactly the desired routes (link route to the
//   EIP network, default via the gateway, throw routes for the internal nets);
// - every ip rule at priority 1001 whose table is 1001 (shown as "eip_route" when that name
//   is registered): exactly one `from VMI/32 lookup 1001` per bound VMI, nothing else.
//
// How it reads (RouteManager runs the commands): `ip -json route show table 1001` and `ip
// -json -N rule show` (-N: table ids as numbers whatever rt_tables says; "eip_route" is
// accepted too). Routes compare by kind/dst/gateway/dev exactly (a route with a metric or
// tos, or of any other type, is never the one we want); the kernel's identity of a route in
// a table is (dst, tos, metric), which decides between `replace` and `del`.
//
// What it writes, first in RouteManager's batch: route replaces (link routes first, so the
// gateway of the default route is reachable, then via routes, then throw routes), route
// deletions, rule additions, rule deletions (rules with extra selectors first: `ip rule del`
// treats every selector it is not given as a wildcard).
//
// Belief: our plain `from VMI/32` rules in a delta tracker (delta.ts), so a plan costs one
// lookup per desired source it already holds. Rules that are not plain /32 ones, or copies,
// are kept in kernel order until the next write deletes them; a write whose deletions could
// not be named exactly asks for a re-read.
import type { RouteSpec } from "../model/desired.js";
import { parseIpv4, parseIpv4Net } from "../common/ipv4.js";
import { canonicalAddress } from "./canonical.js";
import { type DeltaEntry, DeltaTracker } from "./delta.js";
import {
  type KernelRoute,
  type KernelRule,
  canonicalDst,
  identityOf,
  isDeviceName,
  routeDelLine,
  routeKey,
  routeReplaceLine,
} from "./iproute-parse.js";
import { KernelError, Phase } from "./manager.js";
import { sameStrings } from "./snapshot.js";

/** A rule as read, kept while the read rules are not all plain `from VMI/32` ones. */
interface ReadRule {
  readonly rule: KernelRule;
  /** The VMI of a plain `from VMI/32` rule, when it is the first rule of that VMI. */
  readonly source: string | undefined;
}

export interface RoutingBelief {
  /** The routes of our table (a handful). */
  routes: readonly KernelRoute[];
  /** Our plain `from VMI/32 lookup T priority P` rules, by VMI. */
  readonly sources: DeltaTracker<DeltaEntry>;
  /**
   * Every rule as read, in kernel order, when some are not plain /32 rules or are copies:
   * the next write deletes those, in this order. Undefined once the rules are just `sources`.
   */
  irregularRules: readonly ReadRule[] | undefined;
}

export interface RoutingPlan {
  /** Batch lines, all of Phase.PolicyRouting. */
  readonly lines: readonly string[];
  /** True when the belief cannot be trusted after the write, even if it succeeds. */
  readonly rereadAfter: boolean;
  /**
   * The replace lines of our routes through `dev`: deleting a device's last IPv4 address
   * makes the kernel flush every route through it, in every table (fib_disable_ip).
   */
  through(dev: string): string[];
  /** Updates the belief to what the kernel holds once the lines succeeded. */
  commit(): void;
}

const KIND_ORDER = { link: 0, via: 1, throw: 2 };

export class PolicyRoutes {
  constructor(private readonly options: { readonly table: number; readonly priority: number }) {}

  /**
   * A fresh belief from what was read (never changed), keyed by the string objects of
   * `ruleSources` where they are equal (see snapshot.ts).
   */
  beliefOf(
    routes: readonly KernelRoute[],
    rules: readonly KernelRule[],
    ruleSources: readonly string[],
  ): RoutingBelief {
    const { table, priority } = this.options;
    const sameSource = sameStrings(ruleSources);
    const sources = new Map<string, DeltaEntry>();
    const readRules: ReadRule[] = [];
    let irregular = false;
    for (const rule of rules) {
      let source: string | undefined;
      const { key } = rule;
      if (rule.exact && key.startsWith("from ") && key.endsWith("/32")) {
        const address = key.slice(5, -3);
        if (
          !sources.has(address) &&
          canonicalAddress(address) === address &&
          rule.del === `rule del from ${address}/32 lookup ${table} priority ${priority}`
        ) {
          source = sameSource.get(address) ?? address;
          sources.set(source, { seen: 0, pos: sources.size, order: sources.size });
        }
      }
      if (source === undefined) irregular = true;
      readRules.push({ rule, source });
    }
    return {
      routes: [...routes],
      sources: new DeltaTracker(sources),
      irregularRules: irregular ? readRules : undefined,
    };
  }

  /**
   * The lines for the difference between the desired routes and rule sources and `belief`.
   * Cost: one map lookup per desired rule source the belief holds; only the others are
   * validated, and the belief's rules are only walked when some of them must go.
   */
  plan(
    desired: { readonly routes: readonly RouteSpec[]; readonly ruleSources: readonly string[] },
    belief: RoutingBelief,
  ): RoutingPlan {
    const { table, priority } = this.options;
    validateRoutes(desired.routes);
    const lines: string[] = [];
    let rereadAfter = false;

    // Routes. The first desired route of an identity wins (two desired routes to one dst
    // would contradict each other).
    const wantedRoutes = new Map<string, RouteSpec>();
    for (const route of desired.routes) {
      const identity = identityOf(canonicalDst(route.dst), "0", 0);
      if (!wantedRoutes.has(identity)) wantedRoutes.set(identity, route);
    }
    const current = new Map<string, KernelRoute>();
    for (const route of belief.routes) {
      if (!current.has(route.identity)) current.set(route.identity, route);
    }
    const replaces = [...wantedRoutes.values()]
      .filter(
        (route) =>
          current.get(identityOf(canonicalDst(route.dst), "0", 0))?.key !== routeKey(route),
      )
      .sort((a, b) => KIND_ORDER[a.kind] - KIND_ORDER[b.kind]);
    for (const route of replaces) lines.push(routeReplaceLine(route, table));
    for (const route of belief.routes) {
      // A route at a wanted identity is overwritten by its replace, not deleted.
      if (wantedRoutes.has(route.identity)) continue;
      lines.push(route.del);
    }

    // Rules: one `from VMI/32` rule per desired source.
    const { sources } = belief;
    const ruleDelta = sources.diff(desired.ruleSources, {
      // Not a source we hold (those are canonical addresses): check it.
      canonical: (text) => {
        const address = canonicalAddress(text);
        if (address === undefined) {
          throw new KernelError(Phase.PolicyRouting, `invalid rule source ${JSON.stringify(text)}`);
        }
        return address;
      },
    });
    const ruleDeletes: string[] = [];
    const plainDeletes: string[] = [];
    const irregularRules = belief.irregularRules;
    if (irregularRules !== undefined) {
      for (const { rule, source } of irregularRules) {
        if (source !== undefined && sources.wanted(ruleDelta, source)) continue;
        if (!rule.exact) rereadAfter = true;
        (rule.key.startsWith("other ") ? ruleDeletes : plainDeletes).push(rule.del);
      }
    } else {
      for (const source of ruleDelta.deletes) {
        plainDeletes.push(`rule del from ${source}/32 lookup ${table} priority ${priority}`);
      }
    }
    for (const source of ruleDelta.adds) {
      lines.push(`rule add from ${source}/32 lookup ${table} priority ${priority}`);
    }
    lines.push(...ruleDeletes, ...plainDeletes);

    return {
      lines,
      rereadAfter,
      through: (dev) =>
        [...wantedRoutes.values()]
          .filter((route) => route.kind !== "throw" && route.dev === dev)
          .sort((a, b) => KIND_ORDER[a.kind] - KIND_ORDER[b.kind])
          .map((route) => routeReplaceLine(route, table)),
      commit: () => {
        belief.routes = [...wantedRoutes].map(([identity, route]): KernelRoute => {
          const dst = canonicalDst(route.dst);
          return { identity, key: routeKey(route), del: routeDelLine(dst, "0", 0, table) };
        });
        // Every rule but the kept plain ones was deleted (with irregular rules, those too).
        sources.commit(ruleDelta, (_source, base) => base);
        belief.irregularRules = undefined;
      },
    };
  }
}

/**
 * Rejects routes ip could not parse: a syntax error makes `ip -batch` exit at once, even with
 * -force, without running the remaining lines and without a `Command failed` line. (Rule
 * sources are checked while they are canonicalised.)
 */
function validateRoutes(routes: readonly RouteSpec[]): void {
  for (const route of routes) {
    const badDst = route.dst !== "default" && parseIpv4Net(route.dst) === undefined;
    const badGateway = route.kind === "via" && parseIpv4(route.gateway) === undefined;
    const badDev = route.kind !== "throw" && !isDeviceName(route.dev);
    if (badDst || badGateway || badDev) {
      throw new KernelError(Phase.PolicyRouting, `invalid route ${JSON.stringify(route)}`);
    }
  }
}
