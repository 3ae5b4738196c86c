# Minimal image; a hardened, CI-built image is its own issue.
ARG BASE=node:20-bookworm-slim
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends libbpf1 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/oomtrail
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY bpf/*.bpf.o bpf/*.h ./bpf/
COPY config ./config
COPY dist/src ./dist/src
ENTRYPOINT ["node", "/opt/oomtrail/dist/src/cli/main.js"]
CMD ["run"]
