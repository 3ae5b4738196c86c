/*
 * One boot of test/vm/run.sh for the matrix files (x86 and arm64): its exit code and whole output, with run.sh's
 * progress lines (kernel download, initramfs, timings) passed to this process's stderr as they come.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';

const REPO = path.resolve(__dirname, '../../..');
const RUN = path.join(REPO, 'test/vm/run.sh');

/** run.sh's `--env KEY=VALUE` options. */
export const guestEnvArgs = (env: Record<string, string>): string[] => Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]);

export function runGuest(args: string[], hostEnv: Record<string, string> = {}): Promise<{ code: number | null; out: string }> {
  const child = spawn('bash', [RUN, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...hostEnv } });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
    for (const line of d.toString().split('\n')) {
      if (line.startsWith('[vm-run]') || line.startsWith('[initramfs]') || line.startsWith('[fetch-kernel]')) process.stderr.write(line + '\n');
    }
  });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, out })));
}

/** The guest test runner's result lines: what a cell prints when it passes, and quotes when it fails. */
export function guestSummary(out: string): string {
  return out
    .split('\n')
    .filter((l) => /^\[vm\] .*(✔|✖|ℹ (tests|pass|fail|bystanders))/.test(l))
    .join('\n');
}

/**
 * A failed guest run, for the assertion message: its output without the kernel's per-kill lines (a 1,000-process
 * sweep prints thousands, and a 20 kB tail of them hid which guest test failed), the tail of the rest.
 */
export function guestFailure(code: number | null, out: string): string {
  const lines = out.split('\n');
  const kept = lines.filter((l) => !/\] (Memory cgroup out of memory: Killed process|oom-kill:|Out of memory: Killed process)|^\[vm\] \[ *\d+\.\d+\]\s+\[ *\d+\]/.test(l));
  return `guest run failed (exit ${code}); guest output without its ${lines.length - kept.length} kernel kill/task lines:\n${kept.join('\n').slice(-20000)}`;
}
