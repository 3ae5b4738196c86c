/*
 * The kernel matrix: the e2e OOM tests inside VMs of Debian's cloud kernels — 11's 5.10, 12's 6.1,
 * 13's 6.12 and unstable's newest (7.x when written; fetched anew once a week, so a kernel change shows
 * here the week it lands) (kprobes, fentry, BTF, cgroup v2 with the memory controller) — once per kernel
 * and forced hook. Each run boots the kernel under QEMU (TCG), runs the tests as root in the guest, and fails
 * here with the guest's output when anything fails there. OOMTRAIL_VM_KERNELS (comma-separated
 * releases) narrows the matrix for a local run. The arm64 row is test/vm/matrix-arm64.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HOOK_ORDER } from '../../src/record/record';
import { guestEnvArgs, guestFailure, guestSummary, runGuest } from './guest-run';

const GUEST_TESTS = ['dist/test/e2e/oomkill.e2e.test.js', 'dist/test/e2e/cgroup2.e2e.test.js'];
// the trail does not depend on the OOM hook (its collectors are tracepoints and PSI): one run carries it,
// the one on the pid-only mark_victim path, to keep the matrix inside its time budget
const TRAIL_HOOK = 'tp_btf';
const TRAIL_TESTS = ['dist/test/e2e/trail.e2e.test.js'];
// memory_at_kill reads kernel structures whose layout differs by kernel: the trail hook's cell of every kernel,
// and every hook of 6.1 (the cgroup v2 oracle: fentry and kprobe take the page counters at
// oom_kill_process() entry, the tracepoints at mark_victim).
const EXPLAIN_TESTS = ['dist/test/e2e/explain.e2e.test.js'];
const explainOn = (k: GuestKernel, hook: string) => hook === TRAIL_HOOK || k.release === 'bookworm';
// memory.oom.group sweeps (5 processes × 20 and × 3 with the agent CPU-throttled, then 1,000 twice: default ring, ring forced tiny): they exercise the
// ring and the pipeline, not the hook's kernel reads, so one cell per kernel carries them, the default hook's (the
// first 'auto' takes), on 6.1 and 6.12 (the kernels kubelet's memory.oom.group runs on here)
const SWEEP_TESTS = ['dist/test/e2e/sweep.e2e.test.js'];
const sweepOn = (k: GuestKernel, hook: string) => hook === HOOK_ORDER[0] && (k.release === 'bookworm' || k.release === 'trixie');
// the sweep-order case (issue 25: 5 members, 20 runs, 3 more throttled; ~95 s of guest time) in full on 6.1, where the
// lost member was found; 6.12 runs 5 + 1 of it, its 1,000-process sweeps in full
const SWEEP_ORDER_SHORT: Record<string, string> = { OOMTRAIL_E2E_SWEEP_RUNS: '5', OOMTRAIL_E2E_SWEEP_THROTTLED_RUNS: '1' };
// oom_scope under a kubepods-style hierarchy on cgroup v2 (the host runs it on v1): path parsing, not the hook, so
// one cell: 6.12's default hook (~22 s of guest time, measured)
const SCOPE_TESTS = ['dist/test/e2e/scope.e2e.test.js'];
const scopeOn = (k: GuestKernel, hook: string) => hook === HOOK_ORDER[0] && k.release === 'trixie';
// one OOM costs ~10x more under software emulation: the burst is shorter than on the host
const BURST = process.env.OOMTRAIL_VM_BURST ?? '10';

interface GuestKernel {
  release: 'bullseye' | 'bookworm' | 'trixie' | 'sid';
  label: string;
  /** what run.sh prints for the booted kernel: proves the matrix ran the kernel it names */
  uname: RegExp;
  /** the kernel prints the RSS counters' exact per-CPU sums (Linux 7.0+): the per-CPU e2e test must see deltas pending */
  printsRssSums?: boolean;
}
const KERNELS: GuestKernel[] = [
  { release: 'bullseye', label: 'Debian 11 5.10', uname: /\[vm-run\] kernel 5\.10\./ },
  { release: 'bookworm', label: 'Debian 12 6.1', uname: /\[vm-run\] kernel 6\.1\./ },
  { release: 'trixie', label: 'Debian 13 6.12', uname: /\[vm-run\] kernel 6\.12\./ },
  // whatever unstable builds: a kernel past 7.x still runs (and passes or fails) under this label
  { release: 'sid', label: 'Debian unstable 7.x', uname: /\[vm-run\] kernel (?:[7-9]|[1-9]\d)\.\d+\.\d+\+deb/, printsRssSums: true },
];
const only = process.env.OOMTRAIL_VM_KERNELS?.split(',').map((k) => k.trim());

function runInVm(release: string, env: Record<string, string>, command: string[], timeoutS: number): Promise<{ code: number | null; out: string }> {
  return runGuest(['--kernel', release, '--timeout', String(timeoutS), ...guestEnvArgs(env), '--', ...command]);
}

/** The guest panicked on an int3 trap in kernel text (a jump-label patch site), with no BPF program in the trace. */
export function isEmulatorTextPatchOops(out: string): boolean {
  const oops = out.indexOf('Oops: int3');
  if (oops < 0 || !/Kernel panic/.test(out)) return false;
  const trace = out.slice(oops, out.indexOf('Kernel panic', oops) + 1 || undefined);
  return !/bpf_prog_|bpf_trace|\[bpf\]/.test(trace);
}

/**
 * The guest hung in the kernel: soft lockups and RCU stalls until run.sh's timeout, with no BPF frame
 * in what was printed. Seen once in five runs of 5.10's tracepoint cell (right after the oom.group
 * kill), cause not found yet: rerun once, said loudly, with the first run's whole output kept.
 */
export function isGuestSoftLockup(code: number | null, out: string): boolean {
  return code === 124 && /watchdog: BUG: soft lockup/.test(out) && !/bpf_prog_|\[bpf\]/.test(out);
}

for (const k of KERNELS.filter((k) => !only || only.includes(k.release))) {
  for (const hook of HOOK_ORDER) {
    const trail = hook === TRAIL_HOOK;
    const explain = explainOn(k, hook);
    const sweep = sweepOn(k, hook);
    const scope = scopeOn(k, hook);
    test(`${k.label} VM, hook ${hook}: e2e OOM tests${trail ? ' + memory trail' : ''}${explain ? ' + memory at kill' : ''}${sweep ? ' + oom.group sweeps' : ''}${scope ? ' + oom_scope' : ''} pass and the hook is the one forced`, { timeout: sweep ? 1_200_000 : 900_000 }, async () => {
      const t0 = Date.now();
      const run = () =>
        runInVm(
          k.release,
          {
            OOMTRAIL_COLLECTORS_OOMKILL_HOOK: hook,
            OOMTRAIL_E2E_BURST: BURST,
            ...(explain ? { OOMTRAIL_E2E_GLOBAL_OOM: '1' } : {}),
            ...(k.printsRssSums ? { OOMTRAIL_E2E_RSS_DELTAS: '1' } : {}),
            ...(sweep && k.release !== 'bookworm' ? SWEEP_ORDER_SHORT : {}),
          },
          ['sh', '-c', `node dist/src/cli/main.js check | sed -n '/^selected hook/,/^collectors/p' && exec node --test --test-concurrency=1 ${[...GUEST_TESTS, ...(trail ? TRAIL_TESTS : []), ...(explain ? EXPLAIN_TESTS : []), ...(sweep ? SWEEP_TESTS : []), ...(scope ? SCOPE_TESTS : [])].join(' ')}`],
          // the sweeps take ~165 s of the guest's time (6.1; the 3 throttled sweeps ~30 s of it)
          sweep ? 800 : 600,
        );
      let { code, out } = await run();
      // Software emulation (TCG) with 2 vCPUs can run a stale copy of kernel text that another vCPU is
      // live-patching (jump labels flip whenever a tracepoint is attached or detached): the guest dies
      // on "Oops: int3" at a patch site in kernel code, not in a BPF program. Seen once in 12 runs on
      // a heavily loaded host. Such a run says nothing about the agent: it is run once more, and
      // said so. Any other oops or panic fails the test.
      if (code !== 0 && isEmulatorTextPatchOops(out)) {
        process.stderr.write(`[vm] ${k.label} ${hook}: guest died on an int3 oops at a kernel text-patch site (emulator); running it once more\n`);
        ({ code, out } = await run());
      }
      if (isGuestSoftLockup(code, out)) {
        const kept = path.join(os.tmpdir(), `oomtrail-vm-softlockup-${k.release}-${hook}-${Date.now()}.log`);
        fs.writeFileSync(kept, out);
        process.stderr.write(`[vm] ${k.label} ${hook}: GUEST SOFT LOCKUP (kernel hung until the timeout; output kept in ${kept}); running it once more\n`);
        ({ code, out } = await run());
      }
      assert.equal(code, 0, guestFailure(code, out));
      // the guest really ran the tests, under the hook we forced, on the kernel we named
      assert.match(out, /\[vm\] ℹ fail 0/);
      assert.match(out, /\[vm\] ℹ pass [1-9]/);
      assert.match(out, k.uname);
      assert.ok(!/ℹ skipped [1-9]/.test(out), `no guest test may be skipped:\n${guestSummary(out)}`);
      const check = out.split('\n').filter((l) => /^\[vm\] (selected hook|degraded|  - )/.test(l)).join('\n');
      process.stderr.write(`[vm] ${k.label} ${hook} (${Math.round((Date.now() - t0) / 1000)} s):\n${check}\n${guestSummary(out)}\n`);
    });
  }
}
