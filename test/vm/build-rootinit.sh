#!/usr/bin/env bash
# The small initramfs of run.sh --rootfs: static busybox, the kernel's modules for a virtio disk with ext4
# (Debian's cloud kernels build virtio_blk and ext4 as modules) and an /init that loads them, mounts /dev/vda
# and hands over to the init= of the kernel command line (systemd) with switch_root.
#
#   build-rootinit.sh <kernel-dir> <out.cpio.gz>      (kernel-dir as fetch-kernel.sh prints it)
#
# Cached in $OOMTRAIL_CACHE/v1/vm/initramfs/rootinit-<key>.cpio.gz (key: kernel version, busybox, this script,
# modules.sh).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KERNEL_DIR="$1"
OUT="$2"
CACHE_ROOT="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}"
ICACHE="$CACHE_ROOT/v1/vm/initramfs"
MODULES="virtio_pci virtio_blk ext4"
# ext4 asks the crypto API for crc32c (metadata checksums) by name, not through depends=
OPTIONAL="crc32c_generic"
log() { printf '[rootinit] %s\n' "$*" >&2; }

BUSYBOX="$(command -v busybox || true)"
[[ -x "$BUSYBOX" ]] || { log "busybox not found (apt-get install busybox-static)"; exit 1; }
KVER="$(cat "$KERNEL_DIR/version")"
KEY="$( { echo "$KVER $MODULES $OPTIONAL"; stat -L -c '%s %Y' "$BUSYBOX"; cat "${BASH_SOURCE[0]}" "$HERE/modules.sh"; } | sha256sum | cut -c1-16)"
CACHED="$ICACHE/rootinit-$KEY.cpio.gz"
mkdir -p "$ICACHE"
if [[ ! -f "$CACHED" ]]; then
  MODROOT="$KERNEL_DIR/modules/$KVER"
  MOD_FILES=()
  # shellcheck source=modules.sh
  source "$HERE/modules.sh"
  for m in $MODULES; do mod_add "$m"; done
  for m in $OPTIONAL; do mod_add "$m" 2>/dev/null || true; done
  st="$(mktemp -d "$ICACHE/.rootinit.XXXXXX")"
  trap 'rm -rf "$st"' EXIT
  mkdir -p "$st"/{bin,dev,proc,sys,newroot,modules}
  cp "$BUSYBOX" "$st/bin/busybox"
  for a in sh mount umount insmod switch_root sleep cat mkdir echo; do ln -s busybox "$st/bin/$a"; done
  for f in "${MOD_FILES[@]}"; do cp "$f" "$st/modules/"; basename "$f" >> "$st/modules/order"; done
  touch "$st/modules/order"
  cat > "$st/init" <<'INIT'
#!/bin/sh
# /init of run.sh --rootfs: load the disk modules, mount the root disk, switch_root to init=
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod "/modules/$m" || echo "rootinit: insmod $m failed"; done
root=/dev/vda; init=/sbin/init
for w in $(cat /proc/cmdline); do
  case "$w" in root=*) root="${w#root=}" ;; init=*) init="${w#init=}" ;; esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw "$root" /newroot || { echo "rootinit: cannot mount $root"; echo "OOMTRAIL-VM-EXIT=125"; sleep 1; echo o > /proc/sysrq-trigger; }
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
umount /sys; umount /proc
exec switch_root /newroot "$init"
INIT
  chmod 755 "$st/init"
  (cd "$st" && find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc -R 0:0 2>/dev/null) | gzip -n -6 > "$CACHED.tmp.$$"
  mv "$CACHED.tmp.$$" "$CACHED"
  log "built $(basename "$CACHED") ($(du -h "$CACHED" | cut -f1)): modules ${MOD_FILES[*]##*/}"
  ls -1t "$ICACHE"/rootinit-*.cpio.gz 2>/dev/null | tail -n +5 | xargs -r rm -f
fi
cp "$CACHED" "$OUT"
