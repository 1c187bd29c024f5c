# The three images of kube-eip, one target each, sharing the build stages:
#   docker build --target agent    -t IMAGE .   # eip_agent and the kernel tools it drives
#   docker build --target operator -t IMAGE .   # eip-operator
#   docker build --target eipctl   -t IMAGE .   # eipctl
# (make docker-build-agent, docker-build-operator, docker-build-eipctl.)
#
# Node.js 24 (the LTS line the tests run on, the release scripts/node24.sh installs) on
# Debian bookworm, the release whose tools the tests run (iptables 1.8.9 with both
# backends, ipset 7.17, nftables 1.0.6, iproute2 6.1, gobgpd 3, arp-scan 1.10). The base is pinned by its
# full tag; NODE_IMAGE can point at a mirror.
ARG NODE_IMAGE=node:24.22.3-bookworm-slim

# TypeScript to JavaScript, with the dev dependencies; the tests are not compiled.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.json ./
COPY src ./src
COPY scripts/build-info.sh ./scripts/
# The commit --version prints (make docker-build-* passes it; "unknown" without).
ARG KUBE_EIP_COMMIT=unknown
# Only src/ without its tests is compiled (a test may import what the image has not: e2e/).
RUN printf '{"extends":"./tsconfig.json","include":["src/**/*.ts"],"exclude":["src/**/*.test.ts"]}' \
        > tsconfig.image.json \
    && npx tsc -p tsconfig.image.json --sourceMap false \
    && scripts/build-info.sh \
    && chmod 0755 dist/src/bin/*.js

# The runtime dependencies only.
FROM ${NODE_IMAGE} AS runtime-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error && npm cache clean --force

# What every image holds: /app/{package.json,node_modules,dist/src,proto}.
FROM ${NODE_IMAGE} AS app
WORKDIR /app
ENV NODE_ENV=production
COPY package.json ./
COPY --from=runtime-deps /app/node_modules ./node_modules
COPY proto ./proto
COPY --from=build /src/dist/src ./dist/src

FROM app AS agent
# iptables (both backends: --iptables-mode auto uses the one holding the host's rules),
# ipset, nftables (nft, --dataplane nftables), iproute2 (ip), procps (sysctl, for a privileged container without --proc-sys),
# gobgpd (--bgp-type gobgp), arp-scan (gratuitous ARP), iputils-arping (troubleshooting).
RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        iptables ipset nftables iproute2 conntrack procps gobgpd arp-scan iputils-arping \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /app/dist/src/bin/eip_agent.js /usr/local/bin/eip_agent \
    && ln -s /app/dist/src/bin/eipctl.js /usr/local/bin/eipctl \
    && ln -s /app/dist/src/bin/eip_agent-container.js /usr/local/bin/eip_agent-container \
    && ln -s /app/dist/src/bin/eip_agent-container.js /entrypoint.sh
# Root: the agent changes the node's network configuration (with NET_ADMIN and NET_RAW
# only, see config/agent) and writes root-owned files of the node (its state, rt_tables).
# /entrypoint.sh is the seed's command; both read the ConfigMap's AGENT_* variables.
ENTRYPOINT ["/usr/local/bin/eip_agent-container"]

FROM app AS operator
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/src/bin/eip-operator.js"]

FROM app AS eipctl
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/src/bin/eipctl.js"]
