#!/usr/bin/env bash
# Installs what oomtrail needs on a Debian host, only what is missing, then npm deps and the build.
#   scripts/setup-host.sh run    -> runtime: libbpf1, the pinned Node.js LTS (scripts/node-runtime.sh)
#   scripts/setup-host.sh test   -> + bpftool (layout test), qemu + busybox (VM kernel matrix)
#   scripts/setup-host.sh bpf    -> + clang/llvm/libbpf-dev to rebuild bpf/*.bpf.o
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

pkgs=(libbpf1)
case "$mode" in
  run) ;;
  test) pkgs+=(bpftool qemu-system-x86 busybox-static cpio) ;;
  bpf) pkgs+=(bpftool clang llvm libbpf-dev) ;;
  *) echo "usage: $0 run|test|bpf" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "need root to install: ${missing[*]}" >&2; exit 1; fi
  echo "[setup] apt-get install ${missing[*]}"
  t0=$SECONDS
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "[setup] apt done in $((SECONDS - t0)) s"
fi

# the agent's Node.js LTS (runtime/node.version) from the npm registry, cached outside the clone; this machine's
# node (20) and npm only bootstrap: they fetch it, install the deps and run tsc
echo "[setup] node runtime: $(bash scripts/node-runtime.sh)"

# npm ci only when the lock file changed since the last install
stamp=node_modules/.oomtrail-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  echo "[setup] npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
echo "[setup] build (tsc)"
npx --no-install tsc -p tsconfig.json

# real servers for the integration tests: each test/servers/<name>/setup.sh installs or builds its
# server into the versioned cache (outside the clone) and is a no-op when the cache is warm
if [ "$mode" = test ]; then
  for s in test/servers/*/setup.sh; do
    [ -f "$s" ] || continue
    echo "[setup] $s"
    t0=$SECONDS
    bash "$s"
    echo "[setup] $s done in $((SECONDS - t0)) s"
  done
fi
