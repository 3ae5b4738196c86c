#!/usr/bin/env bash
# Build (once, cached) the Debian root filesystem image that run.sh --rootfs boots with systemd as PID 1.
#
#   build-rootfs.sh <release>          bullseye (Debian 11) | bookworm (12)
#
# Prints the image directory on its last line: $OOMTRAIL_CACHE/v1/vm/rootfs-<release>-<key>/ holding
#   base.img    raw ext4 (made by mke2fs -d from the debootstrap tree: no mount, no loop device); run.sh
#               boots it with snapshot=on, so the base stays as built and every run writes to its own overlay
#   info        release, debian_version, systemd version, build time
# The key is a hash of this script: a change to it builds a new image (older ones are removed).
#
# The tree: debootstrap --variant=minbase of the release from the mirror the host's apt sources name, with
# systemd (+ systemd-sysv, udev, dbus) and the libraries the oomtrail package depends on (libelf1, zlib1g,
# libatomic1, libstdc++6; libc6 and libgcc-s1 are in every base), so
# `apt-get install ./oomtrail_*.deb` needs nothing from the network. It has no apt sources at all: apt never
# tries the network. journald is persistent (/var/log/journal exists). Gettys and apt's timers are masked.
# The guest-side runner (vmtest-runner.service) mounts the second disk (/dev/vdb, ext4) at /vmtest, runs
# /vmtest/cmd.sh once per boot with OOMTRAIL_VM_BOOT=<n> (1, 2, ... counted on the root disk) and
# OOMTRAIL_VM_OUT=/vmtest/out, and prints on the console (ttyS0):
#   OOMTRAIL-VM-START uptime=<s>      before the command, on every boot
#   OOMTRAIL-VM-REBOOT boot=<n>       the command exited 194: the guest reboots (systemctl reboot) and the
#                                     command runs again with the next boot number
#   OOMTRAIL-VM-EXIT=<code>           any other exit: the guest powers off
set -euo pipefail

RELEASE="${1:-}"
case "$RELEASE" in
  bullseye|bookworm) ;;
  *) echo "usage: $0 bullseye|bookworm" >&2; exit 2 ;;
esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}"
VM_CACHE="$CACHE_ROOT/v1/vm"
KEY="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
OUT="$VM_CACHE/rootfs-$RELEASE-$KEY"
SIZE="${OOMTRAIL_VM_ROOTFS_SIZE:-3G}"

log() { printf '[build-rootfs] %s: %s\n' "$RELEASE" "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1fs", b-a}'; }

if [[ -f "$OUT/.complete" ]]; then
  log "cached: $OUT ($(head -n1 "$OUT/info" 2>/dev/null))"
  echo "$OUT"
  exit 0
fi
[[ "$(id -u)" == 0 ]] || { log "ERROR: debootstrap needs root"; exit 1; }
for t in debootstrap mke2fs; do
  command -v "$t" >/dev/null || { log "ERROR: $t missing (apt-get install debootstrap e2fsprogs)"; exit 1; }
done

mkdir -p "$VM_CACHE"
exec 9>"$VM_CACHE/.rootfs-$RELEASE.lock"
flock 9
if [[ -f "$OUT/.complete" ]]; then log "cached (built meanwhile): $OUT"; echo "$OUT"; exit 0; fi

# the mirror the host already uses (deb822 .sources or one-line sources.list), never a fixed host name
mirror="$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/{for(i=2;i<=NF;i++)print $i}'
             cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1=="deb"{for(i=2;i<=NF;i++)if($i ~ /^[a-z]+:\/\//){print $i; break}}'
           } | grep -E '/debian/?$' | head -n1 || true)"
[[ -n "$mirror" ]] || { log "ERROR: no Debian mirror found in /etc/apt/sources.list*"; exit 1; }

T0="$(now)"
work="$(mktemp -d "$VM_CACHE/.rootfs-$RELEASE.XXXXXX")"
root="$work/root"
cleanup() {
  # debootstrap mounts proc/sys in the tree while it runs; never leave them behind
  for m in "$root/proc" "$root/sys" "$root/dev/pts" "$root/dev"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT

INCLUDE=systemd,systemd-sysv,udev,dbus,libelf1,zlib1g,libatomic1,libstdc++6,procps,kmod
log "debootstrap --variant=minbase --include=$INCLUDE from the host's mirror (takes a minute or two) ..."
if ! debootstrap --variant=minbase --include="$INCLUDE" --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
     "$RELEASE" "$root" "$mirror" > "$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  log "ERROR: debootstrap failed"
  exit 1
fi
T_DEB="$(now)"
log "debootstrap done in $(awk -v a="$T0" -v b="$T_DEB" 'BEGIN{printf "%.1fs", b-a}')"

# ---- configuration of the guest
echo oomtrail-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost oomtrail-vm\n::1 localhost\n' > "$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
# no apt sources: `apt-get install ./x.deb` resolves against what is installed and never touches the network
rm -f "$root/etc/apt/sources.list" "$root/etc/apt/sources.list.d/"* "$root/var/lib/apt/lists/"*_* 2>/dev/null || true
: > "$root/etc/apt/sources.list"
printf 'APT::Install-Recommends "false";\nAcquire::Languages "none";\n' > "$root/etc/apt/apt.conf.d/90vmtest"
rm -f "$root/var/cache/apt/archives/"*.deb
# persistent journal
mkdir -p "$root/var/log/journal"
# a console that only the runner writes to: no gettys, no apt timers, no waiting for a network
for u in serial-getty@ttyS0.service getty@tty1.service getty-static.service apt-daily.timer apt-daily-upgrade.timer \
         e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
ln -sf /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"

cat > "$root/usr/local/sbin/vmtest-runner" <<'EOF'
#!/bin/sh
# Runs /vmtest/cmd.sh from the second disk once per boot (see test/vm/build-rootfs.sh).
exec > /dev/ttyS0 2>&1 < /dev/null
mkdir -p /vmtest /var/lib/vmtest
if ! mount -t ext4 /dev/vdb /vmtest; then
  echo "vmtest-runner: cannot mount /dev/vdb"; echo "OOMTRAIL-VM-EXIT=125"; systemctl poweroff --force --force
fi
n=$(( $(cat /var/lib/vmtest/boots 2>/dev/null || echo 0) + 1 ))
echo "$n" > /var/lib/vmtest/boots
sync
mkdir -p /vmtest/out
read -r UPTIME _ < /proc/uptime
echo "OOMTRAIL-VM-BOOT n=$n"
echo "OOMTRAIL-VM-START uptime=$UPTIME"
cd /vmtest
OOMTRAIL_VM_BOOT=$n OOMTRAIL_VM_OUT=/vmtest/out PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  sh /vmtest/cmd.sh
rc=$?
cd /
sync
if [ "$rc" = 194 ]; then
  umount /vmtest
  echo "OOMTRAIL-VM-REBOOT boot=$n"
  systemctl reboot
  exit 0
fi
umount /vmtest || sync
echo "OOMTRAIL-VM-EXIT=$rc"
sleep 0.2
# the root disk is a throw-away overlay: no clean shutdown needed once the results disk is unmounted
systemctl poweroff --force --force
EOF
chmod 755 "$root/usr/local/sbin/vmtest-runner"
cat > "$root/etc/systemd/system/vmtest-runner.service" <<'EOF'
[Unit]
Description=oomtrail VM test runner (runs /vmtest/cmd.sh from /dev/vdb)
# after everything multi-user.target pulls in has been started; Type=simple so that boot completes
# (systemctl is-system-running --wait in the command does not wait for this unit)
After=multi-user.target
ConditionPathExists=/dev/vdb

[Service]
Type=simple
ExecStart=/usr/local/sbin/vmtest-runner
StandardInput=null
StandardOutput=null
KillMode=process

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/vmtest-runner.service "$root/etc/systemd/system/multi-user.target.wants/vmtest-runner.service"

{
  echo "$RELEASE debian $(cat "$root/etc/debian_version") systemd $(chroot "$root" dpkg-query -W -f '${Version}' systemd)"
  echo "mirror-built $(date -u +%FT%TZ), debootstrap $(awk -v a="$T0" -v b="$T_DEB" 'BEGIN{printf "%.1fs", b-a}')"
} > "$work/info"

# ---- the image, without mounting it
log "mke2fs -t ext4 -d (image $SIZE, sparse) ..."
T_MK="$(now)"
for m in "$root/proc" "$root/sys" "$root/dev/pts" "$root/dev"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
mke2fs -q -t ext4 -L vmroot -E root_owner=0:0 -d "$root" "$work/base.img" "$SIZE"
echo "mke2fs $(since "$T_MK"), used $(du -sh "$root" | cut -f1), image on disk $(du -h "$work/base.img" | cut -f1)" >> "$work/info"

rm -rf "$OUT"
mkdir -p "$OUT"
mv "$work/base.img" "$work/info" "$OUT/"
touch "$OUT/.complete"
# older images of this release (another key) are not used any more
for d in "$VM_CACHE"/rootfs-"$RELEASE"-*; do [[ "$d" != "$OUT" ]] && rm -rf "$d"; done
log "built in $(since "$T0"): $(tr '\n' ';' < "$OUT/info")"
echo "$OUT"
