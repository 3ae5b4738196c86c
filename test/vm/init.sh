#!/bin/sh
# /init of the oomtrail test VM (busybox sh, PID 1). Packed by build-initramfs.sh.
#
# Kernel command line parameters read here:
#   oomtrail.cmd=<base64>   sh script to run in the project directory (stdin /dev/null)
#   oomtrail.shell=1        interactive shell on the console instead of a command
#   oomtrail.debug=1        trace this script (set -x)
#   oomtrail.net=1          load the packed virtio-net modules, eth0 = 10.0.2.15/24 via 10.0.2.2
#                           (QEMU user networking: 10.0.2.2 is the host's 127.0.0.1)
# Without oomtrail.cmd, /oomtrail/cmd.sh (packed by run.sh for long commands) is run.
#
# Console protocol (parsed by run.sh):
#   OOMTRAIL-VM-START uptime=<s>     just before the command starts
#   OOMTRAIL-VM-EXIT=<code>          after it ends; then the VM powers off

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export TMPDIR=/tmp
export LANG=C.UTF-8
export TERM=dumb   # the kernel passes TERM=linux; keep escapes out of the serial log

die() {
  echo "oomtrail-init: $*"
  echo "OOMTRAIL-VM-EXIT=125"
  sleep 0.2
  poweroff -f
}

mnt() { # type source target [options]
  mkdir -p "$3"
  if [ -n "$4" ]; then mount -t "$1" -o "$4" "$2" "$3"; else mount -t "$1" "$2" "$3"; fi ||
    echo "oomtrail-init: warning: mount -t $1 $3 failed"
}

mnt proc proc /proc
mnt sysfs sysfs /sys
mnt devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mnt devpts devpts /dev/pts "gid=5,mode=620,ptmxmode=666"
mnt tmpfs tmpfs /dev/shm "mode=1777"
mnt tracefs tracefs /sys/kernel/tracing
mnt debugfs debugfs /sys/kernel/debug
mnt bpf bpf /sys/fs/bpf "mode=700"
mnt securityfs securityfs /sys/kernel/security
mnt cgroup2 cgroup2 /sys/fs/cgroup "nsdelegate"
mkdir -p /tmp /run /var/tmp && chmod 1777 /tmp /var/tmp

CMDLINE="$(cat /proc/cmdline)"
param() { # print the value of kernel parameter $1
  for w in $CMDLINE; do
    case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
  done
  return 1
}
[ "$(param oomtrail.debug)" = 1 ] && set -x

# Enable every available controller for child cgroups; memory is mandatory.
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
grep -qw memory /sys/fs/cgroup/cgroup.subtree_control ||
  echo "oomtrail-init: warning: memory controller not enabled in /sys/fs/cgroup"

hostname oomtrail-vm
ip link set lo up 2>/dev/null
ln -sf /proc/self/fd /dev/fd 2>/dev/null
ln -sf /proc/self/fd/0 /dev/stdin 2>/dev/null
ln -sf /proc/self/fd/1 /dev/stdout 2>/dev/null
ln -sf /proc/self/fd/2 /dev/stderr 2>/dev/null

# Networking (run.sh --net): QEMU user-mode network, the host's 127.0.0.1 is 10.0.2.2.
if [ "$(param oomtrail.net)" = 1 ]; then
  for m in $(cat /usr/lib/modules/oomtrail/order 2>/dev/null); do
    insmod "/usr/lib/modules/oomtrail/$m" || echo "oomtrail-init: warning: insmod $m failed"
  done
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2; then
    echo "nameserver 10.0.2.3" > /etc/resolv.conf
    echo "10.0.2.2 oomtrail-host" >> /etc/hosts
    export OOMTRAIL_VM_HOST_IP=10.0.2.2
  else
    echo "oomtrail-init: warning: network setup failed"
  fi
fi

PROJECT="$(cat /oomtrail/project-dir 2>/dev/null)"
[ -n "$PROJECT" ] && [ -d "$PROJECT" ] || PROJECT=/
cd "$PROJECT" || die "cannot cd to $PROJECT"

if [ "$(param oomtrail.shell)" = 1 ]; then
  echo "oomtrail-init: interactive shell in $PROJECT (exit to power off)"
  TERM=vt100 setsid cttyhack sh -l
  echo "OOMTRAIL-VM-EXIT=$?"
  sleep 0.2
  poweroff -f
fi

if B64="$(param oomtrail.cmd)"; then
  printf '%s' "$B64" | base64 -d > /oomtrail/cmd.sh 2>/dev/null || die "cannot decode oomtrail.cmd"
fi
[ -s /oomtrail/cmd.sh ] || die "no command (oomtrail.cmd= or /oomtrail/cmd.sh)"

read -r UPTIME _ < /proc/uptime
echo "OOMTRAIL-VM-START uptime=$UPTIME"
sh /oomtrail/cmd.sh < /dev/null
RC=$?
echo "OOMTRAIL-VM-EXIT=$RC"
# Let the UART drain before the power goes.
sync
sleep 0.2
poweroff -f
