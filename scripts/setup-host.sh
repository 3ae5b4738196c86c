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
  test) pkgs+=(bpftool qemu-system-x86 qemu-system-arm busybox-static cpio debootstrap e2fsprogs) ;;
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

# OOMTRAIL_BACKGROUND_BUILDS=1 (scripts/test.sh sets it): the long cold builds run niced in the background on the
# core the tests leave idle (host tests mostly wait for OOM kills; a VM guest uses both cores only later): Loki
# (~850 s on a cold cache, needed by the integration tests after the unit and e2e files) and the package VM test's
# two debootstrapped root disks (75-195 s each, needed by the last test file). The one that needs an artefact runs
# the same script again, which waits on the build's lock (or builds it, if the background build failed).
bg_dir="${TMPDIR:-/tmp}/oomtrail-setup-bg"
deferred=" "
background() {
  local name=$1; shift
  mkdir -p "$bg_dir"
  # its own process group (setsid), so scripts/test.sh can stop it whole if it is still running at the end
  setsid nice -n 19 bash -c 't0=$SECONDS; "$@"; rc=$?; echo "[bg] exit $rc after $((SECONDS - t0)) s"; exit $rc' _ "$@" \
    >"$bg_dir/$name.log" 2>&1 </dev/null &
  echo $! >"$bg_dir/$name.pid"
  echo "[setup] $name: in the background (nice 19), log $bg_dir/$name.log"
}
if [ "$mode" = test ] && [ "${OOMTRAIL_BACKGROUND_BUILDS:-0}" = 1 ]; then
  rm -rf "$bg_dir"
  background loki bash test/servers/loki/setup.sh
  deferred+="test/servers/loki/setup.sh "
  # kube-apiserver + etcd (~9-15 min cold) after Loki, not beside it: one niced compile at a time on the core the
  # tests leave idle; the Kubernetes files run last, with Loki's (scripts/test.sh waits for it there)
  if [ "${OOMTRAIL_K8S:-1}" != 0 ]; then
    background kubernetes bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 5; done; bash test/servers/kubernetes/setup.sh' _ "$(cat "$bg_dir/loki.pid")"
  fi
  deferred+="test/servers/kubernetes/setup.sh "
  if [ "${OOMTRAIL_SKIP_VM:-0}" != 1 ] && [ "${OOMTRAIL_VM_PACKAGE:-1}" != 0 ]; then
    background rootfs bash -c 'bash test/vm/build-rootfs.sh bullseye && bash test/vm/build-rootfs.sh bookworm'
  fi
fi

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
    case "$deferred" in *" $s "*) continue ;; esac
    # kube-apiserver + etcd: a long cold build that only the Kubernetes files need (`npm run test:kubernetes`, or
    # npm test's background build above)
    case "$s" in test/servers/kubernetes/setup.sh) continue ;; esac
    echo "[setup] $s"
    t0=$SECONDS
    bash "$s"
    echo "[setup] $s done in $((SECONDS - t0)) s"
  done
fi
