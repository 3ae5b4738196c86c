#!/bin/sh
# The oomtrail package end to end on a systemd-booted Debian guest (run.sh --rootfs; test/vm/package.test.ts).
# Runs once per boot from /vmtest (the second disk: the two packages, receiver.js, this script) with
# OOMTRAIL_VM_BOOT=<n>. It only acts and collects: what it saw goes to $OOMTRAIL_VM_OUT (copied to the host
# after the VM ends) and the host test asserts on it, with the kernel's own log (a /dev/kmsg dump) as the oracle.
#   boot 1: install the package (no network) -> active; a real kill recorded live; maps, node version, security;
#           stop the agent, 3 kills, exit 194 = `systemctl reboot` (same disk)
#           with the agent stopped, configure a webhook sink that is down (nothing listens on its port)
#   boot 2: the agent is active after boot and backfills the 3 kills from the persistent journal with boot 1's
#           id; 2 more kills: the webhook sink's spool holds these 5 undelivered; upgrade to the higher version;
#           the receiver comes up -> the 5 arrive; purge; what is left on disk
# Env from the host (vars.sh): PKG_OLD, PKG_NEW (file names of the packages), HOOK_PORT.
set -u
O="$OOMTRAIL_VM_OUT"
. /vmtest/vars.sh
EVENTS=/var/lib/oomtrail/events.jsonl
cfg=/etc/oomtrail/config.yaml
export DEBIAN_FRONTEND=noninteractive

say() { echo "[guest] $*"; }
mark() { printf '%s boot%s %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$OOMTRAIL_VM_BOOT" "$*" >> "$O/steps"; say "$*"; }
fail() { echo "boot $OOMTRAIL_VM_BOOT: $*" >> "$O/errors"; say "FAIL: $*"; }
uptime_s() { cut -d. -f1 /proc/uptime; }
# wait_for SECONDS 'shell condition' (a deadline: each check itself takes a while under emulation; the deadlines are
# twice what a guest alone needs, as npm test runs this guest niced beside the host tests)
wait_for() {
  _end=$(( $(uptime_s) + $1 ))
  while ! eval "$2"; do [ "$(uptime_s)" -ge "$_end" ] && return 1; sleep 0.5; done
  return 0
}
agent_pid() { systemctl show -p MainPID --value oomtrail 2>/dev/null; }
# the running agent logged "oomtrail <version> started:" (BPF loaded, sinks up)
agent_started() {
  _p="$(agent_pid)"
  [ -n "$_p" ] && [ "$_p" != 0 ] && journalctl -q -o cat "_PID=$_p" 2>/dev/null | grep -q ' oomtrail [^ ]* started: '
}
# one memcg OOM kill: `tail` buffers an endless line from /dev/zero in a transient unit limited to 32M
hog() { systemd-run -q --wait --unit="$1" -p MemoryMax=32M -p MemorySwapMax=0 sh -c 'cat /dev/zero | tail' > /dev/null 2>&1; }
kernel_kills() { journalctl -k -b -q -o cat 2>/dev/null | grep -c 'Killed process'; }
# 0 while the file does not exist yet (grep -c then prints nothing)
count() { _n="$(grep -c "$1" "$2" 2>/dev/null)"; echo "${_n:-0}"; }
count2() { _n="$(grep "$1" "$3" 2>/dev/null | grep -c "$2")"; echo "${_n:-0}"; }
snapshot_agent() { # suffix: the running agent's state
  systemctl show oomtrail -p ActiveState -p SubState -p MainPID -p NRestarts -p Result > "$O/show.$1" 2>&1
  systemctl is-active oomtrail > "$O/active.$1" 2>&1
}

case "$OOMTRAIL_VM_BOOT" in
1)
  mark "boot 1: waiting for systemd to finish booting"
  systemctl is-system-running --wait > "$O/system-state.1" 2>&1
  cat /proc/sys/kernel/random/boot_id > "$O/boot_id.1"
  uname -r > "$O/uname"
  cat /etc/debian_version > "$O/debian_version"
  systemctl --version | head -n1 > "$O/systemd_version"
  stat -f -c %T /sys/fs/cgroup > "$O/cgroupfs"
  # the host's libbpf: Debian 11 has no libbpf1 package (the private one must be what the agent maps)
  { dpkg-query -W -f '${Package} ${Version} ${Status}\n' 'libbpf*' 2>&1; ls /usr/lib/x86_64-linux-gnu/ | grep libbpf; } > "$O/host-libbpf" 2>&1
  mark "apt-get install ./$PKG_OLD (no network: the guest has no apt sources and no network device)"
  apt-get install -y "/vmtest/$PKG_OLD" > "$O/install.log" 2>&1
  echo $? > "$O/install.rc"
  say "apt-get exit $(cat "$O/install.rc")"
  dpkg-query -W -f '${Version}' oomtrail > "$O/version.install" 2>&1
  if ! wait_for 360 agent_started; then
    fail "the agent did not log 'started' within 360 s of the install"
    journalctl -u oomtrail -o short-monotonic --no-pager > "$O/agent.install.log" 2>&1
    say "agent log: $(grep -v '^--' "$O/agent.install.log" | tail -n 5)"
  fi
  snapshot_agent install
  say "agent $(cat "$O/active.install") after the install"
  pid="$(agent_pid)"
  echo "$pid" > "$O/pid.install"
  cat "/proc/$pid/maps" > "$O/maps" 2>&1
  readlink "/proc/$pid/exe" > "$O/exe" 2>&1
  "/proc/$pid/exe" --version > "$O/node_version" 2>&1
  systemd-analyze security oomtrail.service > "$O/security" 2>&1
  echo "rc=$?" >> "$O/security"

  mark "a live kill"
  hog vmtest-live
  wait_for 180 '[ "$(count "\"victim_comm\":\"tail\"" "$EVENTS")" -ge 1 ]' || fail "the live kill is not in $EVENTS"
  sleep 2
  mark "stop the agent, 3 kills while it is down"
  systemctl stop oomtrail
  snapshot_agent stopped
  for i in 1 2 3; do hog "vmtest-missed-$i"; done
  wait_for 60 '[ "$(kernel_kills)" -ge 4 ]' || fail "the journal holds $(kernel_kills) kill lines, not 4"
  mark "configure a webhook sink that is down (nothing listens on 127.0.0.1:$HOOK_PORT)"
  # the conffile, edited as an operator would: the upgrade must keep it
  awk -v url="http://127.0.0.1:$HOOK_PORT/hook" '
    /^[a-z]/ { top = $1 } /^  [a-z_]+:$/ { sec = top $1 }
    sec == "sinks:webhook:" && $0 == "    enabled: false" { $0 = "    enabled: true" }
    sec == "sinks:webhook:" && $0 == "    url: '"''"'" { $0 = "    url: " url }
    sec == "pipeline:retry:" && $1 == "max_ms:" { $0 = "    max_ms: 2000" }
    { print }' "$cfg" > "$cfg.new" && cat "$cfg.new" > "$cfg" && rm -f "$cfg.new"
  grep -n "127.0.0.1:$HOOK_PORT" "$cfg" > "$O/config.edited" 2>&1
  journalctl --sync
  # the oracle: the kernel's log, and boot 1's wall clock against its uptime (the kills' times)
  timeout 2 cat /dev/kmsg > "$O/kmsg.1"
  echo "$(date +%s.%N) $(cut -d' ' -f1 /proc/uptime)" > "$O/clock.1"
  cp "$EVENTS" "$O/events.1.jsonl"
  journalctl -b -u oomtrail -o short-monotonic --no-pager > "$O/agent.1.log" 2>&1
  mark "reboot"
  exit 194
  ;;
2)
  mark "boot 2: waiting for systemd to finish booting"
  systemctl is-system-running --wait > "$O/system-state.2" 2>&1
  cat /proc/sys/kernel/random/boot_id > "$O/boot_id.2"
  # right after boot: enabled by the package, started by multi-user.target
  snapshot_agent boot2
  say "agent $(cat "$O/active.boot2") after the reboot"
  wait_for 360 agent_started || fail "the agent did not log 'started' within 360 s of boot 2"
  snapshot_agent boot2-started
  prev="$(cat "$O/boot_id.1")"
  wait_for 240 '[ "$(count2 "\"boot_id\":\"$prev\"" "\"hook\":\"kmsg\"" "$EVENTS")" -ge 3 ]' ||
    fail "fewer than 3 records of boot 1 from the journal in $EVENTS"
  sleep 3
  cp "$EVENTS" "$O/events.2.jsonl"
  journalctl --list-boots --no-pager > "$O/list-boots" 2>&1

  mark "2 more kills: with the 3 from the journal, 5 records for the webhook sink that is down"
  boot2="$(cat "$O/boot_id.2")"
  for i in 1 2; do hog "vmtest-spooled-$i"; done
  wait_for 180 '[ "$(count2 "\"boot_id\":\"$boot2\"" "\"victim_comm\":\"tail\"" "$EVENTS")" -ge 2 ]' || fail "the 2 kills are not in $EVENTS"
  sleep 3
  cp -a /var/lib/oomtrail/spool/webhook "$O/spool.before-upgrade" 2>> "$O/errors.cp"
  echo "$(agent_pid)" > "$O/pid.before-upgrade"

  mark "upgrade to $PKG_NEW"
  apt-get install -y -o Dpkg::Options::=--force-confold "/vmtest/$PKG_NEW" > "$O/upgrade.log" 2>&1
  echo $? > "$O/upgrade.rc"
  say "apt-get exit $(cat "$O/upgrade.rc"), version $(dpkg-query -W -f '${Version}' oomtrail)"
  dpkg-query -W -f '${Version}' oomtrail > "$O/version.upgrade" 2>&1
  wait_for 360 agent_started || fail "the agent did not log 'started' within 360 s of the upgrade"
  snapshot_agent upgrade
  echo "$(agent_pid)" > "$O/pid.upgrade"
  cp "$cfg" "$O/config.after-upgrade.yaml"

  mark "the webhook receiver comes up"
  /usr/lib/oomtrail/bin/node /vmtest/receiver.js "$HOOK_PORT" /root/received.jsonl > "$O/receiver.log" 2>&1 &
  rpid=$!
  wait_for 240 '[ "$(count "\"victim_comm\":\"tail\"" /root/received.jsonl)" -ge 5 ]' || fail "fewer than 5 records reached the webhook"
  # a duplicate would come within a retry delay (2 s)
  sleep 6
  cp /root/received.jsonl "$O/received.jsonl"
  cp -a /var/lib/oomtrail/spool/webhook "$O/spool.after" 2>> "$O/errors.cp"
  cp "$EVENTS" "$O/events.final.jsonl"
  journalctl -b -u oomtrail -o short-monotonic --no-pager > "$O/agent.2.log" 2>&1
  kill "$rpid"; rm -f /root/received.jsonl
  timeout 2 cat /dev/kmsg > "$O/kmsg.2"

  mark "purge"
  apt-get purge -y oomtrail > "$O/purge.log" 2>&1
  echo $? > "$O/purge.rc"
  say "apt-get purge exit $(cat "$O/purge.rc")"
  snapshot_agent purge
  for p in /usr/lib/oomtrail /etc/oomtrail /var/lib/oomtrail /var/lib/private/oomtrail /lib/systemd/system/oomtrail.service \
           /etc/systemd/system/multi-user.target.wants/oomtrail.service /usr/bin/oomtrail /usr/share/doc/oomtrail; do
    if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi
  done > "$O/leftovers"
  find / -xdev -name '*oomtrail*' >> "$O/leftovers" 2>/dev/null
  dpkg-query -W -f '${Status}' oomtrail > "$O/dpkg.after-purge" 2>&1
  mark "done"
  exit 0
  ;;
*)
  fail "unexpected boot $OOMTRAIL_VM_BOOT"
  exit 1
  ;;
esac
