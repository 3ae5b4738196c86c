#!/usr/bin/env bash
# The arm64 userland an aarch64 guest needs, from Debian 12's arm64 packages (downloaded with the private apt
# configuration fetch-kernel.sh keeps for bookworm arm64, never the system's): busybox-static, glibc and the C++
# runtime node links, libbpf1 with its libelf/zlib; plus koffi's linux-arm64 build from the npm registry (the
# version the lock file pins). Unpacked, not installed, into the cache; prints the directory on stdout.
#   test/vm/arm64-sysroot.sh
# Result: <dir>/root/ (the packages' files: bin/busybox, usr/lib/aarch64-linux-gnu/…, lib/ld-linux-aarch64.so.1)
#         <dir>/koffi-linux-arm64/ (the npm package), <dir>/packages (name version, one a line)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "$HERE/../.." && pwd)"
VM_CACHE="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/vm"
PKGS=(busybox-static libc6 libstdc++6 libgcc-s1 libatomic1 libbpf1 libelf1 zlib1g)
KOFFI="$(node -e 'const l=require(process.argv[1]);process.stdout.write(l.packages["node_modules/@koromix/koffi-linux-arm64"].version)' "$PROJECT/package-lock.json")"
KEY="$(echo "${PKGS[*]} koffi=$KOFFI" | sha256sum | cut -c1-12)"
OUT="$VM_CACHE/sysroot-bookworm-arm64-$KEY"
log() { printf '[arm64-sysroot] %s\n' "$*" >&2; }
if [[ -f "$OUT/.complete" ]]; then echo "$OUT"; exit 0; fi

# the bookworm arm64 apt lists (fetch-kernel.sh makes them with its private configuration)
OOMTRAIL_VM_ARCH=arm64 bash "$HERE/fetch-kernel.sh" bookworm >/dev/null
adir="$VM_CACHE/apt-bookworm-arm64"
# shellcheck source=private-apt.sh
source "$HERE/private-apt.sh"
private_apt_opts "$adir" arm64
exec 9>"$VM_CACHE/.arm64-sysroot.lock"
flock 9
if [[ -f "$OUT/.complete" ]]; then echo "$OUT"; exit 0; fi
work="$(mktemp -d "$VM_CACHE/.sysroot.XXXXXX")"
trap 'rm -rf "$work"' EXIT
t0=$SECONDS
(cd "$work" && apt-get "${APT_OPTS[@]}" download -q "${PKGS[@]/%/:arm64}" >&2)
mkdir -p "$work/out/root"
for d in "$work"/*.deb; do
  dpkg-deb -x "$d" "$work/out/root"
  echo "$(dpkg-deb -f "$d" Package) $(dpkg-deb -f "$d" Version)" >> "$work/out/packages"
done
(cd "$work" && npm pack --silent --loglevel=error "@koromix/koffi-linux-arm64@$KOFFI" >/dev/null)
mkdir -p "$work/out/koffi-linux-arm64"
tar -xzf "$work"/koromix-koffi-linux-arm64-*.tgz -C "$work/out/koffi-linux-arm64" --strip-components=1
echo "@koromix/koffi-linux-arm64 $KOFFI" >> "$work/out/packages"
# what makes it usable: an aarch64 busybox, loader, libbpf and koffi addon
for f in bin/busybox lib/ld-linux-aarch64.so.1 usr/lib/aarch64-linux-gnu/libbpf.so.1; do
  file -L "$work/out/root/$f" | grep -q 'ARM aarch64' || { log "ERROR: $f is not an aarch64 ELF"; exit 1; }
done
file -L "$work/out/koffi-linux-arm64"/linux_arm64/koffi.node | grep -q 'ARM aarch64' || { log "ERROR: koffi.node is not aarch64"; exit 1; }
touch "$work/out/.complete"
rm -rf "$OUT"
mv "$work/out" "$OUT"
log "$(wc -l < "$OUT/packages") packages in $OUT ($((SECONDS - t0)) s)"
echo "$OUT"
