#!/usr/bin/env bash
# The agent's Node.js runtime: the exact LTS release pinned in runtime/node.version (the one place), taken from the
# npm registry's node-linux-<arch> package (npm checks the tarball against the registry's integrity hash) and
# cached outside the clone. Prints the runtime's directory (bin/node, LICENSE) on stdout; progress on stderr.
#   scripts/node-runtime.sh [x64|arm64]     (default x64)
# Cache: ${OOMTRAIL_CACHE:-~/.cache/oomtrail}/v1/node/<version>-linux-<arch>/
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
arch="${1:-x64}"
case "$arch" in x64|arm64) ;; *) echo "usage: $0 [x64|arm64]" >&2; exit 2 ;; esac
version="$(tr -d ' \n' < "$here/runtime/node.version")"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "runtime/node.version: not a version: $version" >&2; exit 1; }
dir="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/node/$version-linux-$arch"

# what makes a cached runtime good: the binary runs and says it is this version (x64 here), or is an aarch64 ELF
verify() {
  local node="$1/bin/node"
  [[ -x "$node" ]] || return 1
  if [[ "$arch" == x64 && "$(uname -m)" == x86_64 ]]; then
    [[ "$("$node" --version 2>/dev/null)" == "v$version" ]]
  else
    [[ "$(head -c 20 "$node" | od -An -tx1 | tr -d ' \n')" == 7f454c46020101* ]] &&
      grep -q "\"version\": *\"$version\"" "$1/package.json"
  fi
}

if verify "$dir"; then echo "$dir"; exit 0; fi
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if verify "$dir"; then echo "$dir"; exit 0; fi
t0=$SECONDS
tmp="$(mktemp -d "$dir.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "[node] npm pack node-linux-$arch@$version" >&2
(cd "$tmp" && npm pack --silent --loglevel=error "node-linux-$arch@$version" >/dev/null)
tar -xzf "$tmp/node-linux-$arch-$version.tgz" -C "$tmp" package/bin/node package/LICENSE package/package.json
mkdir -p "$tmp/out/bin"
mv "$tmp/package/bin/node" "$tmp/out/bin/node"
mv "$tmp/package/LICENSE" "$tmp/package/package.json" "$tmp/out/"
verify "$tmp/out" || { echo "[node] node-linux-$arch@$version: bin/node does not report v$version" >&2; exit 1; }
rm -rf "$dir"
mv "$tmp/out" "$dir"
echo "[node] node v$version ($arch) in $dir, $((SECONDS - t0)) s" >&2
echo "$dir"
