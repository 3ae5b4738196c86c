#!/bin/sh
# Smoke test of the VM environment; runs INSIDE the guest:
#   test/vm/run.sh -- sh test/vm/selftest.sh
# Checks BTF, cgroup2 memory controller, kprobe-able oom_kill_process, /dev/kmsg,
# a real memcg OOM kill (busybox and node hogs), and libbpf loaded through koffi.
fail=0
ok()  { echo "selftest: ok   - $*"; }
bad() { echo "selftest: FAIL - $*"; fail=1; }
check() { desc="$1"; shift; if "$@"; then ok "$desc"; else bad "$desc"; fi; }

echo "selftest: kernel $(uname -r), node $(node -v), $(nproc) cpus, $(awk '/MemTotal/{print $2" kB"}' /proc/meminfo)"
check "BTF /sys/kernel/btf/vmlinux" test -s /sys/kernel/btf/vmlinux
check "cgroup2 controllers include memory ($(cat /sys/fs/cgroup/cgroup.controllers))" \
  grep -qw memory /sys/fs/cgroup/cgroup.controllers
check "memory enabled in root subtree_control" grep -qw memory /sys/fs/cgroup/cgroup.subtree_control
n=$(grep -c '^oom_kill_process' /sys/kernel/tracing/available_filter_functions)
check "oom_kill_process in available_filter_functions ($n)" test "$n" -ge 1
if echo 'p:oomtrail_selftest oom_kill_process' >> /sys/kernel/tracing/kprobe_events; then
  ok "kprobe on oom_kill_process created"
  echo '-:oomtrail_selftest' >> /sys/kernel/tracing/kprobe_events
else
  bad "kprobe on oom_kill_process"
fi
check "tracepoint oom:mark_victim" test -d /sys/kernel/tracing/events/oom/mark_victim
check "bpffs mounted" grep -q ' /sys/fs/bpf bpf ' /proc/mounts
check "lockdown none ($(cat /sys/kernel/security/lockdown 2>/dev/null || echo 'securityfs not mounted'))" \
  sh -c '! grep -q "\[integrity\]\|\[confidentiality\]" /sys/kernel/security/lockdown 2>/dev/null'
check "/dev/kmsg readable" sh -c 'dd if=/dev/kmsg bs=8192 count=1 2>/dev/null | grep -q .'

oom_test() { # name limit hog-command...
  name="$1"; limit="$2"; shift 2
  cg=/sys/fs/cgroup/$name
  mkdir -p "$cg" && echo "$limit" > "$cg/memory.max" || { bad "create $cg"; return; }
  echo 0 > "$cg/memory.swap.max" 2>/dev/null
  before=$(dmesg | grep -c 'Killed process')
  sh -c 'echo $$ > '"$cg"'/cgroup.procs && exec "$@"' hog "$@" >/dev/null 2>&1
  rc=$?
  kills=$(awk '$1=="oom_kill"{print $2}' "$cg/memory.events")
  after=$(dmesg | grep -c 'Killed process')
  check "$name: hog killed by SIGKILL (exit $rc)" test "$rc" -eq 137
  check "$name: memory.events oom_kill=$kills" test "$kills" -eq 1
  check "$name: kernel log has a new 'Killed process' line" test "$after" -gt "$before"
  dmesg | grep 'Killed process' | tail -n1 | sed 's/^/selftest:        /'
  rmdir "$cg"
}
oom_test oomtest-sh 32M tail /dev/zero
oom_test oomtest-node 64M node -e 'const a=[]; for(;;) a.push(Buffer.alloc(1<<20, 1))'
# read /dev/kmsg like the agent does: non-blocking, one record per read()
kmsg_js='
const fs = require("fs");
const fd = fs.openSync("/dev/kmsg", fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
const buf = Buffer.alloc(8192); let n = 0, hits = 0;
for (;;) {
  let r; try { r = fs.readSync(fd, buf, 0, buf.length, null); } catch (e) { if (e.code === "EAGAIN") break; if (e.code === "EPIPE") continue; throw e; }
  n++; if (buf.toString("utf8", 0, r).includes("Killed process")) hits++;
}
console.log(n + " records, " + hits + " with Killed process");
process.exit(hits >= 2 ? 0 : 1);'
k=$(node -e "$kmsg_js" 2>&1)
check "/dev/kmsg via node (O_NONBLOCK): $k" node -e "$kmsg_js"

v=$(node -e "const k=require('koffi'); console.log(k.load('libbpf.so.1').func('const char *libbpf_version_string(void)')())" 2>&1)
check "libbpf via koffi from $(pwd): $v" sh -c "echo '$v' | grep -q '^v[0-9]'"

if [ $fail -eq 0 ]; then echo "selftest: ALL OK"; else echo "selftest: FAILURES"; fi
exit $fail
