/*
 * A real systemd-journald for the e2e tests, on a machine without systemd as PID 1: started standalone
 * in its own mount and PID namespaces (a private /run, the journal directory bound to a test
 * directory), it reads the real /dev/kmsg and writes a real persistent journal. The new PID namespace
 * is what keeps it from switching on kernel auditing host-wide (the kernel refuses AUDIT_SET from a
 * non-initial PID namespace), which would flood the kernel log with audit lines.
 *
 * Stand-in, named as such: `bootId` bind-mounts another id over /proc/sys/kernel/random/boot_id for
 * journald (and `fakeBootWrap` for an agent), so that its entries carry another boot's id — a
 * "previous boot" without rebooting the test host. The kernel lines themselves are real.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { sleep } from './agent';

export const JOURNALD = '/lib/systemd/systemd-journald';

/** Why a real journald cannot run here, or null. */
export function journaldUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (mount and PID namespaces, /dev/kmsg)';
  for (const f of [JOURNALD, '/usr/bin/journalctl', '/usr/bin/unshare']) if (!fs.existsSync(f)) return `${f} is missing`;
  return null;
}

/** A random boot id in /proc's form. */
export function randomBootId(): string {
  const h = randomBytes(16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export interface TestJournald {
  /** the journal directory (pass as collectors.oomkill.backfill_journald_dir) */
  dir: string;
  /** the boot id journald stamps on its entries (/proc's form) */
  bootId: string;
  /**
   * Runs an agent in journald's mount namespace (pass as StartOptions.wrap): there the journal is at
   * the default location (/var/log/journal/<machine-id>), so journalctl without --directory reads it.
   */
  mountNsWrap(): string[];
  /** Resolves once the journal holds a "Killed process" line for every pid. */
  waitForKills(pids: number[], timeoutMs: number): Promise<void>;
  /** SIGTERM: journald closes its files cleanly (the "shutdown" of a stand-in boot). */
  stop(): Promise<void>;
}

function childrenOf(pid: number): number[] {
  try {
    return fs
      .readdirSync(`/proc/${pid}/task`)
      .flatMap((t) => fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/))
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** Kill lines of these pids in the journal at `dir`. */
export function journalKilledPids(dir: string, pids: number[]): Set<number> {
  const out = execFileSync('journalctl', [`--directory=${dir}`, '_TRANSPORT=kernel', '--grep=Killed process', '-o', 'cat', '--no-pager', '-q'], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  }).toString();
  const want = new Set(pids);
  const seen = new Set<number>();
  for (const m of out.matchAll(/Killed process (\d+) /g)) if (want.has(Number(m[1]))) seen.add(Number(m[1]));
  return seen;
}

export async function startJournald(opts: { dir: string; bootId?: string }): Promise<TestJournald> {
  const dir = opts.dir;
  fs.mkdirSync(dir, { recursive: true });
  const work = fs.mkdtempSync(path.join(path.dirname(dir), 'journald-run-'));
  const bootFile = path.join(work, 'boot_id');
  if (opts.bootId) fs.writeFileSync(bootFile, opts.bootId + '\n');
  const script = [
    'set -e',
    'mount -t tmpfs -o mode=755 tmpfs /run',
    'mkdir -p /run/systemd/journald.conf.d /run/systemd/journal /run/log/journal',
    // persistent from the start (no flush service here), nothing forwarded anywhere
    'printf "[Journal]\\nStorage=persistent\\nReadKMsg=yes\\nForwardToSyslog=no\\nForwardToWall=no\\nForwardToKMsg=no\\nForwardToConsole=no\\n" > /run/systemd/journald.conf.d/test.conf',
    'touch /run/systemd/journal/flushed',
    `mount --bind ${JSON.stringify(dir)} /var/log/journal`,
    ...(opts.bootId ? [`mount --bind ${JSON.stringify(bootFile)} /proc/sys/kernel/random/boot_id`] : []),
    `SYSTEMD_LOG_TARGET=console ${JOURNALD} &`,
    'wait',
  ].join('\n');
  const child: ChildProcess = spawn('unshare', ['--mount', '--pid', '--fork', '--propagation', 'private', '--kill-child', 'sh', '-c', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const bootId = opts.bootId ?? fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  // journald is the child of the namespace's sh, itself unshare's child
  let jpid = 0;
  const until = Date.now() + 15_000;
  for (;;) {
    const sh = childrenOf(child.pid!)[0];
    jpid = sh ? (childrenOf(sh)[0] ?? 0) : 0;
    const files = fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.journal')) : [];
    if (jpid && files.length > 0) break;
    if (child.exitCode !== null || Date.now() > until) {
      child.kill('SIGKILL');
      throw new Error(`systemd-journald did not start:\n${log}`);
    }
    await sleep(100);
  }
  return {
    dir,
    bootId,
    mountNsWrap: () => ['nsenter', `--mount=/proc/${jpid}/ns/mnt`, '--'],
    async waitForKills(pids, timeoutMs) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const seen = journalKilledPids(dir, pids);
        if (seen.size === pids.length) return;
        if (Date.now() > end) throw new Error(`journal ${dir} lacks the kills of ${pids.filter((p) => !seen.has(p)).join(',')}; journald log:\n${log}`);
        await sleep(200);
      }
    },
    async stop() {
      if (child.exitCode === null) {
        try {
          process.kill(jpid, 'SIGTERM');
        } catch {
          /* gone */
        }
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(work, { recursive: true, force: true });
    },
  };
}

/**
 * Stand-in for an agent running in another boot: the agent command is run in a private mount
 * namespace where /proc/sys/kernel/random/boot_id reads `bootId` (pass as StartOptions.wrap).
 */
export function fakeBootWrap(bootId: string, workDir: string): string[] {
  const file = path.join(workDir, `boot_id-${bootId}`);
  fs.writeFileSync(file, bootId + '\n');
  return ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@"', file];
}
