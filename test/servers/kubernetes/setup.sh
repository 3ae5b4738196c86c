#!/usr/bin/env bash
# Builds a real kube-apiserver and etcd from the Go module proxy for the Kubernetes tests (test/k8s, issue 30).
#   output: ${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/kubernetes/<k8s version>/{kube-apiserver,etcd}  (+ .stamp)
# A no-op when both exist and were built from the current module/ (their hash is in .stamp).
# GOMODCACHE and GOCACHE live under the same cache dir, so a rerun (CI on the same machine) is warm.
# `npm test` runs it in the background (scripts/setup-host.sh, after Loki); `npm run test:kubernetes` runs it first.
# Cold, measured 2026-12-06 on 2 cores under `nice -n 19` while other builds and tests kept the load at 6-9:
# 114 MB of module zips downloaded (719 MB unpacked; kube-apiserver's 50 s, etcd's 15 s), kube-apiserver compiled in
# 857 s, etcd in 49 s (GOCACHE 3.0 GB; binaries 114 + 24 MB). Again with the load at 2-3 (two test runs beside it):
# 402 s in all (modules 33 + 12 s, kube-apiserver 336 s, etcd 20 s; 3.8 GB in the cache). Warm: a no-op (0.01 s).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${KUBERNETES_VERSION:-1.37.2}"   # k8s.io/kubernetes v1.<minor>.<patch>; staging modules v0.<minor>.<patch>
etcd_version="${ETCD_VERSION:-3.7.3}"
minor="$(echo "$version" | cut -d. -f2)"
staging="0.${version#1.}"
root="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/kubernetes"
out="$root/$version"
stamp="$out/.stamp"

# the Go toolchain of this machine kind lives in /usr/local/go; a login shell may not have it on PATH
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then PATH="/usr/local/go/bin:$PATH"; fi
if ! command -v go >/dev/null 2>&1; then
  echo "[kubernetes] go toolchain not found on PATH (need Go >= 1.26 to build kube-apiserver $version)" >&2
  exit 1
fi

# version stamps that `kube-apiserver --version` and /version report (k8s' own hack/lib/version.sh sets the same)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=v$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
want="$( (cat "$here"/module/apiserver/* "$here"/module/etcd/*; echo "$version $etcd_version $ldflags"; go env GOVERSION) | sha256sum | cut -c1-16)"
built() { [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }
if built; then
  echo "[kubernetes] cached: $out/kube-apiserver, $out/etcd"
  exit 0
fi

mkdir -p "$out"
exec 9>"$root/.build.lock"
echo "[kubernetes] waiting for the build lock ($root/.build.lock)"
flock 9
# another setup may have finished while we waited
if built; then
  echo "[kubernetes] cached: $out/kube-apiserver, $out/etcd"
  exit 0
fi

export GOMODCACHE="$root/gomod" GOCACHE="$root/gocache" GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
ticker=""
trap '[ -z "$ticker" ] || kill $ticker 2>/dev/null || true' EXIT

# build <name> <module dir> <ldflags>: a copy of module/<dir> in the cache (go.sum is written there, never in the
# clone), its modules resolved (`go build -n` fetches only what the binary needs; go mod tidy would also fetch every
# dependency's test deps), then compiled with progress every 30 s
build() {
  local name=$1 dir=$2 flags=$3 src="$out/src-$1"
  rm -rf "$src"
  mkdir -p "$src"
  cp "$here/module/$dir"/* "$src/"
  sed -i -E "s#(k8s.io/kubernetes) v[0-9.]+#\1 v$version#; s#(=> k8s.io/[a-z-]+) v[0-9.]+#\1 v$staging#; s#(go.etcd.io/etcd/server/v3) v[0-9.]+#\1 v$etcd_version#" "$src/go.mod"
  cd "$src"
  local t0=$SECONDS
  echo "[kubernetes] $name: downloading modules from the Go module proxy into $GOMODCACHE"
  go build -n . >/dev/null 2>"$out/resolve-$name.log" || { tail -50 "$out/resolve-$name.log" >&2; exit 1; }
  rm -f "$out/resolve-$name.log"
  echo "[kubernetes] $name: modules ready in $((SECONDS - t0)) s ($(du -sh "$GOMODCACHE" | cut -f1) in the module cache)"
  local t1=$SECONDS
  echo "[kubernetes] $name: compiling (CGO_ENABLED=0), progress every 30 s"
  ( while sleep 30; do echo "[kubernetes] ... $name still compiling ($((SECONDS - t1)) s)"; done ) &
  ticker=$!
  go build -ldflags "$flags" -o "$out/$name.tmp" .
  kill $ticker 2>/dev/null || true
  ticker=""
  mv "$out/$name.tmp" "$out/$name"
  echo "[kubernetes] built $out/$name ($(du -h "$out/$name" | cut -f1)) in $((SECONDS - t1)) s; $("$out/$name" --version 2>&1 | head -1)"
}

tall=$SECONDS
build kube-apiserver apiserver "$ldflags"
build etcd etcd "-s -w"
echo "$want" > "$stamp"
echo "[kubernetes] done in $((SECONDS - tall)) s"
