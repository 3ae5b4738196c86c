#!/bin/sh
# What the mark_victim program costs per kill, under the OOM lock (it runs inside __oom_kill_process):
# the kernel's own BPF run-time statistics (kernel.bpf_stats_enabled) over N real memcg OOM kills.
# Runs as root where the agent can attach; meant for the VM (bpftool packed), e.g.
#   OOMTRAIL_VM_EXTRA_BINS=bpftool test/vm/run.sh --kernel sid -- sh bench/mark-victim-cost.sh 20 tp_btf
#   OOMTRAIL_VM_APPEND=possible_cpus=256 ... the same with 256 possible CPUs (only 2 online): the per-CPU
#   sum of the RSS counters (Linux 7.0+) then walks 256 CPUs.
# Prints: hook, program, kills, run_cnt, run_time_ns, ns per run, and nr_cpu_ids.
set -eu
N="${1:-20}"
HOOK="${2:-tp_btf}"
CG=/sys/fs/cgroup/oomtrail-bench-$$
echo 1 > /proc/sys/kernel/bpf_stats_enabled
OOMTRAIL_COLLECTORS_OOMKILL_HOOK="$HOOK" OOMTRAIL_SINKS_CONSOLE_ENABLED=false node dist/src/cli/main.js run > /tmp/agent.log 2>&1 &
AGENT=$!
i=0
until grep -q 'oomkill: attached hook' /tmp/agent.log; do
  i=$((i + 1)); [ $i -lt 300 ] || { cat /tmp/agent.log; exit 1; }; sleep 0.1
done
mkdir "$CG"
echo 64M > "$CG/memory.max"
k=0
while [ $k -lt "$N" ]; do
  sh -c "echo \$\$ > $CG/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null" || true
  k=$((k + 1))
done
sleep 1
bpftool -j prog show | node -e '
  const progs = JSON.parse(require("fs").readFileSync(0, "utf8")).filter((p) => /mark/.test(p.name));
  for (const p of progs) console.log(`hook ${process.argv[1]} prog ${p.name} kills ${process.argv[2]} run_cnt ${p.run_cnt ?? 0} run_time_ns ${p.run_time_ns ?? 0} ns/run ${p.run_cnt ? Math.round(p.run_time_ns / p.run_cnt) : "-"}`);
' "$HOOK" "$N"
echo "nr_cpu_ids $(cat /sys/devices/system/cpu/possible) online $(cat /sys/devices/system/cpu/online) kernel $(uname -r)"
grep -o 'oom_kill [0-9]*' "$CG/memory.events"
kill "$AGENT"; wait "$AGENT" || true
rmdir "$CG"
