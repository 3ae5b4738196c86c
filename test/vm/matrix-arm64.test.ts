/*
 * The arm64 row of the kernel matrix (issue 29): the guest e2e tests in aarch64 guests (run.sh --arch arm64:
 * qemu-system-aarch64 -M virt -cpu max, software emulation) of Debian 12's 6.1 and Debian 13's 6.12 cloud-arm64
 * kernels.
 *
 * In `npm test`: one cell per kernel on the DEFAULT hook (hook auto: the agent takes the first of HOOK_ORDER that
 * works), with the agent run from the unpacked arm64 .deb (`npm run package -- --arch arm64`, built once per tree
 * content by test/helpers/deb.ts), not from this tree: its usr/ is appended to the initramfs and the e2e helper
 * starts /usr/bin/oomtrail and checks in /proc that the agent's node and main.js are the package's. The cell
 * asserts the hook `check` selected and, where it fell back, why each earlier hook was refused (6.1 arm64 has no
 * BPF trampoline for fentry: ENOTSUPP).
 * OOMTRAIL_VM_ARM64=0 leaves the row out; OOMTRAIL_VM_ARM64=all (npm run test:vm-arm64) runs the full row: the
 * default cells, then every other hook forced (the default cell covers the hook it selected), from this tree; a
 * hook the kernel refuses is asserted refused with the kernel's reason and passes as "not available: <reason>".
 * OOMTRAIL_VM_KERNELS (comma-separated releases) narrows it like the x86 matrix.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HOOK_ORDER, type Hook } from '../../src/record/record';
import { builtDeb } from '../helpers/deb';
import { guestEnvArgs, guestFailure, guestSummary, runGuest } from './guest-run';

const GUEST_TESTS = ['dist/test/e2e/oomkill.e2e.test.js', 'dist/test/e2e/cgroup2.e2e.test.js'];
const TRAIL_TESTS = ['dist/test/e2e/trail.e2e.test.js'];
const EXPLAIN_TESTS = ['dist/test/e2e/explain.e2e.test.js'];
// as on x86: the trail and memory at kill on the pid-only mark_victim hook's cell, memory at kill on every 6.1 hook
const TRAIL_HOOK: Hook = 'tp_btf';
const BURST = process.env.OOMTRAIL_VM_BURST ?? '10';
// where the package installs the agent (scripts/package-deb.sh)
const PKG_ROOT = '/usr/lib/oomtrail';

interface ArmKernel {
  release: 'bookworm' | 'trixie';
  label: string;
  /** run.sh's line for the booted kernel: the arm64 cloud kernel of the release */
  uname: RegExp;
  /** the hook `auto` must select on this kernel */
  defaultHook: Hook;
  /** hooks this kernel refuses, with the reason `check` must give */
  refuses: Partial<Record<Hook, RegExp>>;
}
const KERNELS: ArmKernel[] = [
  {
    release: 'bookworm',
    label: 'arm64 Debian 12 6.1',
    uname: /\[vm-run\] arm64 kernel 6\.1\.\S+-cloud-arm64,/,
    defaultHook: 'kprobe',
    // arm64 gained BPF trampolines in 6.0, but attaching fentry needs ftrace direct calls, which arm64 got later
    refuses: { fentry: /ENOTSUPP.*no BPF trampoline/ },
  },
  { release: 'trixie', label: 'arm64 Debian 13 6.12', uname: /\[vm-run\] arm64 kernel 6\.12\.\S+-cloud-arm64,/, defaultHook: 'fentry', refuses: {} },
];
const mode = process.env.OOMTRAIL_VM_ARM64 ?? '1';
const only = process.env.OOMTRAIL_VM_KERNELS?.split(',').map((k) => k.trim());
const kernels = KERNELS.filter((k) => !only || only.includes(k.release));

// every cell's whole output, kept: a cell takes minutes of emulation, its failure must be readable without a rerun
const LOG_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-vm-arm64-'));

async function runInVm(cell: string, release: string, env: Record<string, string>, script: string, timeoutS: number, hostEnv: Record<string, string> = {}): Promise<{ code: number | null; out: string }> {
  const r = await runGuest(['--arch', 'arm64', '--kernel', release, '--timeout', String(timeoutS), ...guestEnvArgs(env), '--', 'sh', '-c', script], hostEnv);
  const log = path.join(LOG_DIR, `${cell}.log`);
  fs.writeFileSync(log, r.out);
  process.stderr.write(`[vm] ${cell}: exit ${r.code}, output in ${log}\n`);
  return r;
}

/** run.sh's timings line: boot and command seconds of the cell. */
const timings = (out: string) => out.match(/^\[vm-run\] timings: .*$/m)?.[0] ?? '[vm-run] no timings';

/** `check`'s lines the host asserts on: the runtime, every hook's verdict, the selection. */
const CHECK_LINES = `sed -n '/^node /p;/^libbpf /p;/^hooks (tried/,/^signal companions/p;/^selected hook/,/^collectors/p'`;

/** check's verdict on each hook, as the guest printed it. */
function hookVerdicts(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const [, hook, verdict] of out.matchAll(/^\[vm\] {3}(fentry|kprobe|tp_btf|tracepoint) +(available|unavailable: .*)$/gm)) m.set(hook, verdict);
  return m;
}

function assertGuestPassed(k: ArmKernel, code: number | null, out: string): void {
  assert.equal(code, 0, guestFailure(code, out));
  assert.match(out, /\[vm\] ℹ fail 0/);
  assert.match(out, /\[vm\] ℹ pass [1-9]/);
  assert.ok(!/ℹ skipped [1-9]/.test(out), `no guest test may be skipped:\n${guestSummary(out)}`);
  // the kernel we named, on an aarch64 machine
  assert.match(out, k.uname);
  assert.match(out, /^\[vm\] machine aarch64$/m);
}

const skip = mode === '0' ? 'OOMTRAIL_VM_ARM64=0' : false;

describe('arm64 guests (aarch64 TCG): the e2e OOM tests on 6.1 and 6.12', { skip }, () => {
  test('OOMTRAIL_VM_ARM64 is 0, 1 or all', () => assert.ok(['0', '1', 'all'].includes(mode), `OOMTRAIL_VM_ARM64=${mode}`));

  // the arm64 package's usr/ as a cpio to append to the guest's initramfs (cached beside the .deb); uncompressed:
  // 6.1 took 92 s to the command with it gzip'd (48 MB), 65 s raw (124 MB): one boot each on a loaded host, before
  // run.sh's pauth-impdef (9 s raw since)
  let pkgCpio = '';
  before(async () => {
    const t0 = Date.now();
    const { deb, built, ms } = await builtDeb(undefined, 'arm64');
    pkgCpio = `${deb}.usr.cpio`;
    if (!fs.existsSync(pkgCpio)) {
      const x = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-arm64deb-'));
      try {
        execFileSync('dpkg-deb', ['-x', deb, x]);
        // only usr/: the package's /etc/oomtrail/config.yaml would be read by every agent of the tests
        const tmp = `${pkgCpio}.${process.pid}`;
        execFileSync('sh', ['-c', `find usr | busybox cpio -o -H newc -R 0:0 2>/dev/null > '${tmp}'`], { cwd: x });
        fs.renameSync(tmp, pkgCpio);
      } finally {
        fs.rmSync(x, { recursive: true, force: true });
      }
    }
    process.stderr.write(`[vm] arm64 package ${path.basename(deb)}: ${built ? `built in ${(ms / 1000).toFixed(1)} s` : 'cached'}; usr/ archive ready after ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  });

  for (const k of kernels) {
    test(`${k.label} VM, default hook (${k.defaultHook}), agent from the arm64 .deb: e2e OOM tests + memory trail + memory at kill pass`, { timeout: 1_500_000 }, async () => {
      const t0 = Date.now();
      const tests = [...GUEST_TESTS, ...TRAIL_TESTS, ...EXPLAIN_TESTS];
      const { code, out } = await runInVm(
        `${k.release}-default`,
        k.release,
        { OOMTRAIL_E2E_BURST: BURST, OOMTRAIL_E2E_GLOBAL_OOM: '1', OOMTRAIL_E2E_AGENT: '/usr/bin/oomtrail', OOMTRAIL_E2E_AGENT_ROOT: PKG_ROOT },
        `echo "machine $(uname -m)"; /usr/bin/oomtrail check | ${CHECK_LINES} && exec node --test --test-concurrency=1 ${tests.join(' ')}`,
        1200,
        { OOMTRAIL_VM_EXTRA_INITRD: pkgCpio },
      );
      assertGuestPassed(k, code, out);
      // check ran the package's node and private libbpf
      assert.match(out, new RegExp(`^\\[vm\\] node +v\\S+ \\(${PKG_ROOT}/bin/node\\)$`, 'm'));
      assert.match(out, new RegExp(`^\\[vm\\] libbpf +\\S+ \\(${PKG_ROOT}/lib/libbpf\\.so\\.1\\)$`, 'm'));
      // the hook auto selected, and why each hook before it was refused
      assert.match(out, new RegExp(`^\\[vm\\] selected hook +${k.defaultHook} `, 'm'));
      const verdicts = hookVerdicts(out);
      for (const h of HOOK_ORDER.slice(0, HOOK_ORDER.indexOf(k.defaultHook))) {
        const why = k.refuses[h];
        assert.ok(why, `${h} comes before ${k.defaultHook} but the table has no refusal for it`);
        assert.match(verdicts.get(h) ?? 'no verdict', new RegExp(`^unavailable: .*${why.source}`), `the fallback from ${h} is explained`);
      }
      assert.equal(verdicts.get(k.defaultHook), 'available');
      const check = out.split('\n').filter((l) => /^\[vm\] (node|libbpf|selected hook|  (fentry|kprobe|tp_btf|tracepoint) )/.test(l)).join('\n');
      process.stderr.write(`[vm] ${k.label} default hook (${Math.round((Date.now() - t0) / 1000)} s):\n${timings(out)}\n${check}\n${guestSummary(out)}\n`);
    });
  }

  if (mode !== 'all') return;
  for (const k of kernels) {
    for (const hook of HOOK_ORDER.filter((h) => h !== k.defaultHook)) {
      const refused = k.refuses[hook];
      const trail = hook === TRAIL_HOOK;
      const explain = trail || k.release === 'bookworm';
      const tests = [...GUEST_TESTS, ...(trail ? TRAIL_TESTS : []), ...(explain ? EXPLAIN_TESTS : [])];
      const name = refused
        ? `${k.label} VM, hook ${hook}: the kernel refuses it, and check says why`
        : `${k.label} VM, hook ${hook}: e2e OOM tests${trail ? ' + memory trail' : ''}${explain ? ' + memory at kill' : ''} pass and the hook is the one forced`;
      test(name, { timeout: 1_200_000 }, async () => {
        const t0 = Date.now();
        const checkCmd = `echo "machine $(uname -m)"; node dist/src/cli/main.js check > /tmp/check.out; echo "check exit $?"; ${CHECK_LINES} /tmp/check.out`;
        const { code, out } = await runInVm(
          `${k.release}-${hook}`,
          k.release,
          { OOMTRAIL_COLLECTORS_OOMKILL_HOOK: hook, OOMTRAIL_E2E_BURST: BURST, ...(explain ? { OOMTRAIL_E2E_GLOBAL_OOM: '1' } : {}) },
          refused ? checkCmd : `${checkCmd} && exec node --test --test-concurrency=1 ${tests.join(' ')}`,
          refused ? 300 : 900,
        );
        const verdict = hookVerdicts(out).get(hook) ?? 'no verdict';
        const s = Math.round((Date.now() - t0) / 1000);
        if (refused) {
          assert.equal(code, 0, guestFailure(code, out));
          assert.match(out, k.uname);
          assert.match(out, /^\[vm\] machine aarch64$/m);
          assert.match(verdict, new RegExp(`^unavailable: .*${refused.source}`));
          // a forced hook that cannot attach: check exits non-zero and selects nothing
          assert.match(out, /^\[vm\] selected hook +NONE/m);
          assert.match(out, /^\[vm\] check exit [1-9]/m);
          process.stderr.write(`[vm] ${k.label} ${hook} (${s} s): not available: ${verdict.replace(/^unavailable: /, '')}\n${timings(out)}\n`);
          return;
        }
        assertGuestPassed(k, code, out);
        assert.equal(verdict, 'available');
        assert.match(out, new RegExp(`^\\[vm\\] selected hook +${hook} `, 'm'));
        process.stderr.write(`[vm] ${k.label} ${hook} (${s} s):\n${timings(out)}\n${guestSummary(out)}\n`);
      });
    }
  }
});
