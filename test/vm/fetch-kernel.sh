#!/usr/bin/env bash
# Download and unpack a Debian 6.1 cloud kernel for the e2e VM (no install).
#
# Result (cache dir = ${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/vm):
#   kernel/vmlinuz          the bzImage
#   kernel/config           its /boot/config-*
#   kernel/System.map
#   kernel/modules/<ver>/   its /lib/modules/<ver>
#   kernel/version          e.g. 6.1.0-50-cloud-amd64
#   kernel/package          e.g. linux-image-6.1.0-50-cloud-amd64 6.1.164-1
#
# Idempotent: does nothing when kernel/.complete exists.
# Env: OOMTRAIL_VM_KERNEL_PKG=<package name> to force a package.
# Prints the kernel directory on the last line of stdout (progress goes to stderr).
set -euo pipefail

CACHE_ROOT="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}"
VM_CACHE="$CACHE_ROOT/v1/vm"
KDIR="$VM_CACHE/kernel"

log() { printf '[fetch-kernel] %s\n' "$*" >&2; }

if [[ -f "$KDIR/.complete" ]]; then
  log "cached: $(cat "$KDIR/package") in $KDIR"
  echo "$KDIR"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb; do
  command -v "$tool" >/dev/null || { log "missing $tool (needs a Debian/Ubuntu host)"; exit 1; }
done

mkdir -p "$VM_CACHE"
# one fetch at a time (parallel test runs on a cold cache)
if command -v flock >/dev/null; then
  exec 9>"$VM_CACHE/.fetch.lock"
  flock 9
  if [[ -f "$KDIR/.complete" ]]; then
    log "cached (fetched meanwhile): $(cat "$KDIR/package")"
    echo "$KDIR"
    exit 0
  fi
fi
work="$(mktemp -d "$VM_CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Candidate package names, newest ABI first: the signed image, then the -unsigned one
# (same kernel). The meta package's target may be missing from the mirror, so every
# name apt knows about is tried.
candidates() {
  if [[ -n "${OOMTRAIL_VM_KERNEL_PKG:-}" ]]; then
    echo "$OOMTRAIL_VM_KERNEL_PKG"
    return
  fi
  {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-6\.1\.0-[0-9]*-cloud-amd64\)$/\1/p'
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64' 2>/dev/null | awk '{print $1}'
  } | grep -E '^linux-image-6\.1\.0-[0-9]+-cloud-amd64(-unsigned)?$' \
    | sed -E 's/-unsigned$//' | sort -u \
    | sort -t- -k4,4nr \
    | while read -r p; do echo "$p"; echo "$p-unsigned"; done
}

try_download() {
  local all c
  all="$(candidates)"
  [[ -n "$all" ]] || return 1
  # One apt-cache call: keep names that have an installable candidate version.
  local ok
  ok="$(apt-cache policy $all 2>/dev/null | awk '/^[^ ]/{p=$1; sub(":$","",p)} /Candidate: [0-9]/{print p}')"
  for c in $all; do
    grep -qxF "$c" <<<"$ok" || continue
    log "trying $c"
    if (cd "$work" && apt-get download -q "$c" >&2 2>"$work/err"); then
      log "downloaded $(basename "$(ls "$work"/*.deb)")"
      return 0
    fi
    log "  failed: $(tail -n1 "$work/err" 2>/dev/null)"
    rm -f "$work"/*.deb
  done
  return 1
}

t0=$(date +%s.%N)
if ! try_download; then
  if [[ $(id -u) -eq 0 ]]; then
    log "no candidate downloadable; running apt-get update once and retrying"
    apt-get update -q >&2 || true
    try_download || { log "ERROR: could not download any linux-image-6.1.0-*-cloud-amd64"; exit 1; }
  else
    log "ERROR: no candidate downloadable (try 'apt-get update' as root)"
    exit 1
  fi
fi
t1=$(date +%s.%N)

deb="$(ls "$work"/*.deb | head -n1)"
pkgname="$(dpkg-deb -f "$deb" Package)"
pkgver="$(dpkg-deb -f "$deb" Version)"
log "extracting $pkgname $pkgver"
dpkg-deb -x "$deb" "$work/x"

vmlinuz="$(ls "$work"/x/boot/vmlinuz-* | head -n1)"
kver="${vmlinuz##*/vmlinuz-}"
stage="$work/kernel"
mkdir -p "$stage/modules"
mv "$vmlinuz" "$stage/vmlinuz"
mv "$work/x/boot/config-$kver" "$stage/config"
[[ -f "$work/x/boot/System.map-$kver" ]] && mv "$work/x/boot/System.map-$kver" "$stage/System.map"
mv "$work/x/lib/modules/$kver" "$stage/modules/$kver"
echo "$kver" > "$stage/version"
echo "$pkgname $pkgver" > "$stage/package"
touch "$stage/.complete"

rm -rf "$KDIR"
mv "$stage" "$KDIR"
t2=$(date +%s.%N)
log "kernel $kver ready in $KDIR ($(awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN{printf "download %.1fs, extract %.1fs", b-a, c-b}'))"
echo "$KDIR"
