#!/usr/bin/env bash
# Download and unpack a Debian cloud kernel for the e2e VM (no install).
#
#   fetch-kernel.sh [bookworm|bullseye|trixie|sid]  (default: $OOMTRAIL_VM_RELEASE or bookworm)
#
#   bookworm  Debian 12, linux-image-6.1.0-<N>-cloud-amd64     (the host's own apt lists)
#   bullseye  Debian 11, linux-image-5.10.0-<N>-cloud-amd64    (private apt lists, see below)
#   trixie    Debian 13, linux-image-6.12.<n>+deb13-cloud-amd64 (private apt lists)
#   sid       Debian unstable, the newest linux-image-<x.y.z>+deb<N>-cloud-amd64 (private apt lists),
#             whatever version that is: the matrix follows the newest kernel. Its cache is checked
#             against the mirror again once it is older than OOMTRAIL_VM_SID_MAX_AGE_DAYS (default 7).
#
# Split packages (sid since 7.x): linux-image-<ver> is then an empty package that depends on
# linux-binary-<ver> (the image at /usr/lib/modules/<ver>/vmlinuz), linux-modules-<ver> and
# linux-base-<ver> (config, modules.builtin); those are downloaded and unpacked together.
#
# Releases other than the host's are looked up with a private apt configuration under the cache
# (sources, lists, archives of its own), pointed at the mirror the host's own apt sources use, so
# the system's sources and lists are never touched.
#
# Result (cache dir = ${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/vm):
#   kernel[-<release>]/vmlinuz          the bzImage   (bookworm keeps the plain "kernel" dir)
#   kernel[-<release>]/config           its /boot/config-*
#   kernel[-<release>]/System.map
#   kernel[-<release>]/modules/<ver>/   its modules (/lib/modules or /usr/lib/modules in the package)
#   kernel[-<release>]/version          e.g. 6.1.0-50-cloud-amd64
#   kernel[-<release>]/package          e.g. linux-image-6.1.0-50-cloud-amd64 6.1.164-1
#
# Idempotent: does nothing when the directory's .complete exists.
# Env: OOMTRAIL_VM_KERNEL_PKG=<package name> to force a package (of the chosen release).
#      OOMTRAIL_VM_ARCH=amd64|arm64 (default amd64): arm64 takes linux-image-<ver>-cloud-arm64 (its vmlinuz is a
#      gzip'd raw Image) with a private apt configuration (APT::Architecture=arm64) for every release, into
#      kernel-<release>-arm64/.
# Prints the kernel directory on the last line of stdout (progress goes to stderr).
set -euo pipefail

RELEASE="${1:-${OOMTRAIL_VM_RELEASE:-bookworm}}"
ARCH="${OOMTRAIL_VM_ARCH:-amd64}"
case "$ARCH" in amd64|arm64) ;; *) echo "[fetch-kernel] unknown arch '$ARCH' (amd64|arm64)" >&2; exit 2 ;; esac
# PREFER: tried before the newest. bullseye's 5.10.0-32 (Debian 11.11, the last point release) has
# the pid-only mark_victim of kernels before 6.8; Debian's newer 5.10 builds carry the 6.8 fields.
PREFER=''
case "$RELEASE" in
  bookworm) KPAT='6\.1\.0-[0-9]+'; SUFFIX='' ;;
  bullseye) KPAT='5\.10\.0-[0-9]+'; SUFFIX="-$RELEASE"; PREFER=linux-image-5.10.0-32-cloud-amd64 ;;
  trixie) KPAT='6\.12\.[0-9]+\+deb13'; SUFFIX="-$RELEASE" ;;
  # any version: the newest one the lists name is taken
  sid) KPAT='[0-9]+\.[0-9]+(\.[0-9]+)?\+deb[0-9]+'; SUFFIX="-$RELEASE" ;;
  *) echo "[fetch-kernel] unknown release '$RELEASE' (bookworm|bullseye|trixie|sid)" >&2; exit 2 ;;
esac
# another architecture: its own kernel dir and private apt lists (the host's lists are amd64 only)
if [[ "$ARCH" != amd64 ]]; then SUFFIX="-$RELEASE-$ARCH"; PREFER=''; fi
# sid moves: a cached kernel older than this is compared with the mirror's newest again
SID_MAX_AGE_DAYS="${OOMTRAIL_VM_SID_MAX_AGE_DAYS:-7}"

CACHE_ROOT="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}"
VM_CACHE="$CACHE_ROOT/v1/vm"
KDIR="$VM_CACHE/kernel$SUFFIX"

LABEL="$RELEASE"
[[ "$ARCH" == amd64 ]] || LABEL="$RELEASE $ARCH"
log() { printf '[fetch-kernel] %s: %s\n' "$LABEL" "$*" >&2; }

cached_ok() { # a complete kernel dir, holding the preferred package when there is one
  [[ -f "$KDIR/.complete" ]] || return 1
  if [[ "$RELEASE" == sid && -z "${OOMTRAIL_VM_KERNEL_PKG:-}" ]] &&
     [[ -n "$(find "$KDIR/.complete" -mtime "+$((SID_MAX_AGE_DAYS - 1))" 2>/dev/null)" ]]; then
    return 1 # stale: look again (the same package is kept without a download, see below)
  fi
  [[ -z "$PREFER" || -n "${OOMTRAIL_VM_KERNEL_PKG:-}" || -f "$KDIR/.not-preferred-checked" ]] && return 0
  [[ "$(cut -d' ' -f1 "$KDIR/package")" == "$PREFER" ]]
}
if cached_ok; then
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
  if cached_ok; then
    log "cached (fetched meanwhile): $(cat "$KDIR/package")"
    echo "$KDIR"
    exit 0
  fi
fi
work="$(mktemp -d "$VM_CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# apt options: the host's configuration for bookworm, a private one for the other releases
APT_OPTS=()
PRIVATE_UPDATED=0
if [[ -n "$SUFFIX" ]]; then
  adir="$VM_CACHE/apt-$RELEASE"
  [[ "$ARCH" == amd64 ]] || adir="$VM_CACHE/apt-$RELEASE-$ARCH"
  mkdir -p "$adir/lists/partial" "$adir/archives/partial" "$adir/parts" "$adir/prefs"
  # the mirror the host already uses (deb822 .sources or one-line sources.list), never a fixed host name
  mirrors="$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/{for(i=2;i<=NF;i++)print $i}'
               cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1=="deb"{for(i=2;i<=NF;i++)if($i ~ /^[a-z]+:\/\//){print $i; break}}'
             } | grep -E '/debian(-security)?/?$' | sort -u || true)"
  main_uri="$(grep -v -- '-security' <<<"$mirrors" | head -n1 || true)"
  sec_uri="$(grep -- '-security' <<<"$mirrors" | head -n1 || true)"
  [[ -n "$main_uri" ]] || { log "ERROR: no Debian mirror found in /etc/apt/sources.list*"; exit 1; }
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  {
    echo "deb [signed-by=$keyring] $main_uri $RELEASE main"
    # unstable has no security suite
    [[ -n "$sec_uri" && "$RELEASE" != sid ]] && echo "deb [signed-by=$keyring] $sec_uri $RELEASE-security main"
  } > "$adir/sources.list"
  # shellcheck source=private-apt.sh
  source "$(dirname "${BASH_SOURCE[0]}")/private-apt.sh"
  private_apt_opts "$adir" "$ARCH"
  # sid's lists are refreshed whenever its kernel is looked up again: the newest is wanted
  if ! ls "$adir/lists/"*_Packages >/dev/null 2>&1 || [[ "$RELEASE" == sid ]]; then
    log "apt-get update (private lists in $adir)"
    apt-get "${APT_OPTS[@]}" update -q >&2 || { log "ERROR: apt-get update for $RELEASE failed"; exit 1; }
    PRIVATE_UPDATED=1
  fi
fi

# Candidate package names, newest ABI first: the signed image, then the -unsigned one (same
# kernel). Every name apt knows about is tried: the mirror may lack the newest one's file.
candidates() {
  if [[ -n "${OOMTRAIL_VM_KERNEL_PKG:-}" ]]; then
    echo "$OOMTRAIL_VM_KERNEL_PKG"
    return
  fi
  [[ -n "$PREFER" ]] && echo "$PREFER"
  apt-cache "${APT_OPTS[@]}" search --names-only "^linux-image-${KPAT}-cloud-${ARCH}(-unsigned)?\$" 2>/dev/null | awk '{print $1}' \
    | grep -E "^linux-image-${KPAT}-cloud-${ARCH}(-unsigned)?\$" \
    | sed -E 's/-unsigned$//' | sort -u | sort -rV \
    | while read -r p; do echo "$p"; echo "$p-unsigned"; done
}

# A split image package (an empty linux-image-<ver> depending on linux-binary-, linux-modules- and
# linux-base-<ver>, sid since 7.x): download those parts of exactly that version into $work.
# The signed binary first, then the -unsigned one (same kernel).
download_parts() {
  local deb="$1" dep name ver bin
  # (awk reads the whole listing: grep -q would end the pipe early, a failure under pipefail)
  dpkg-deb -c "$deb" | awk '/\/vmlinuz/{f=1} END{exit !f}' && return 0
  for dep in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -nE 's/^ *(linux-(binary|modules|base)-[^ ]+) \(= ([^)]+)\).*/\1=\3/p'); do
    name="${dep%%=*}"; ver="${dep#*=}"
    if [[ "$name" == linux-binary-* ]]; then
      bin=1
      (cd "$work" && apt-get "${APT_OPTS[@]}" download -q "$dep" >&2 2>"$work/err") ||
        (cd "$work" && apt-get "${APT_OPTS[@]}" download -q "linux-binary-unsigned-${name#linux-binary-}=$ver" >&2 2>"$work/err") ||
        return 1
    else
      (cd "$work" && apt-get "${APT_OPTS[@]}" download -q "$dep" >&2 2>"$work/err") || return 1
    fi
  done
  [[ -n "${bin:-}" ]] || { echo "no vmlinuz and no linux-binary- dependency in $(basename "$deb")" > "$work/err"; return 1; }
}

REUSED=0
try_download() {
  local all c ok
  all="$(candidates)"
  [[ -n "$all" ]] || return 1
  # One apt-cache call: keep names that have an installable candidate version.
  ok="$(apt-cache "${APT_OPTS[@]}" policy $all 2>/dev/null | awk '/^[^ ]/{p=$1; sub(":$","",p)} /Candidate: [0-9]/{print p}')"
  for c in $all; do
    grep -qxF "$c" <<<"$ok" || continue
    # a stale sid cache that still holds the newest kernel is kept as it is
    if [[ -f "$KDIR/.complete" && "$(cut -d' ' -f1 "$KDIR/package" 2>/dev/null)" == "$c" ]]; then
      REUSED=1
      return 0
    fi
    log "trying $c"
    if (cd "$work" && apt-get "${APT_OPTS[@]}" download -q "$c" >&2 2>"$work/err") &&
       download_parts "$(ls "$work"/*.deb | head -n1)"; then
      log "downloaded $(cd "$work" && echo *.deb)"
      return 0
    fi
    log "  failed: $(tail -n1 "$work/err" 2>/dev/null)"
    rm -f "$work"/*.deb
  done
  return 1
}

t0=$(date +%s.%N)
if ! try_download; then
  if [[ $(id -u) -eq 0 && $PRIVATE_UPDATED -eq 0 ]]; then
    log "no candidate downloadable; running apt-get update once and retrying"
    apt-get "${APT_OPTS[@]}" update -q >&2 || true
    try_download || { log "ERROR: could not download any linux-image-${KPAT//\\/}-cloud-$ARCH"; exit 1; }
  else
    log "ERROR: no candidate downloadable (try 'apt-get update' as root)"
    exit 1
  fi
fi
t1=$(date +%s.%N)

if [[ $REUSED -eq 1 ]]; then
  touch "$KDIR/.complete"
  log "cached kernel is still the newest: $(cat "$KDIR/package")"
  echo "$KDIR"
  exit 0
fi

# the image package names the kernel (a split one's parts are unpacked beside it)
deb="$(ls "$work"/linux-image-*.deb | head -n1)"
pkgname="$(dpkg-deb -f "$deb" Package)"
pkgver="$(dpkg-deb -f "$deb" Version)"
log "extracting $pkgname $pkgver"
for d in "$work"/*.deb; do dpkg-deb -x "$d" "$work/x"; done

# /boot/vmlinuz-<ver> (with config-<ver>, System.map-<ver>), or, split, /usr/lib/modules/<ver>/vmlinuz
vmlinuz="$(ls "$work"/x/boot/vmlinuz-* 2>/dev/null | head -n1 || true)"
if [[ -n "$vmlinuz" ]]; then
  kver="${vmlinuz##*/vmlinuz-}"
  config="$work/x/boot/config-$kver"
  sysmap="$work/x/boot/System.map-$kver"
else
  vmlinuz="$(ls "$work"/x/usr/lib/modules/*/vmlinuz | head -n1)"
  kver="$(basename "$(dirname "$vmlinuz")")"
  config="$work/x/usr/lib/modules/$kver/config"
  sysmap="$work/x/usr/lib/modules/$kver/System.map"
fi
stage="$work/kernel"
mkdir -p "$stage/modules"
mv "$vmlinuz" "$stage/vmlinuz"
mv "$config" "$stage/config"
# sid's System.map is a one-line stub (the real one is in the -dbg package): not kept
if [[ -f "$sysmap" ]]; then
  if [[ $(stat -c %s "$sysmap") -gt 4096 ]]; then mv "$sysmap" "$stage/System.map"; else rm -f "$sysmap"; fi
fi
# bookworm and older ship /lib/modules, trixie and sid /usr/lib/modules (merged /usr)
for m in "$work/x/lib/modules/$kver" "$work/x/usr/lib/modules/$kver"; do
  [[ -d "$m" ]] && { mv "$m" "$stage/modules/$kver"; break; }
done
[[ -d "$stage/modules/$kver" ]] || log "warning: no modules directory for $kver in the package"
echo "$kver" > "$stage/version"
echo "$pkgname $pkgver" > "$stage/package"
touch "$stage/.complete"
# the preferred package was not to be had: do not look for it again on every run
if [[ -n "$PREFER" && "$pkgname" != "$PREFER" ]]; then touch "$stage/.not-preferred-checked"; fi

rm -rf "$KDIR"
mv "$stage" "$KDIR"
t2=$(date +%s.%N)
log "kernel $kver ready in $KDIR ($(awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN{printf "download %.1fs, extract %.1fs", b-a, c-b}'))"
echo "$KDIR"
