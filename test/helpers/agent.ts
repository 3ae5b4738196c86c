import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { OomRecord } from '../../src/record/record';

export const REPO = path.resolve(__dirname, '../../..');
export const MAIN = path.join(REPO, 'dist/src/cli/main.js');
/**
 * OOMTRAIL_E2E_AGENT: the agent command to run instead of this tree's dist/ (the arm64 VM cells: /usr/bin/oomtrail
 * of the unpacked arm64 .deb). OOMTRAIL_E2E_AGENT_ROOT (required with it): where that agent's node and main.js must
 * live; startAgent checks the started process against it in /proc, so a test cannot silently run the tree's agent.
 */
export const AGENT = process.env.OOMTRAIL_E2E_AGENT || undefined;
const AGENT_ROOT = process.env.OOMTRAIL_E2E_AGENT_ROOT || undefined;

/** The agent process's executable and main script (from /proc): both must lie under OOMTRAIL_E2E_AGENT_ROOT. */
export function assertAgentFrom(pid: number, root: string): { exe: string; main: string } {
  const exe = fs.readlinkSync(`/proc/${pid}/exe`);
  const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const main = args.find((a) => a.endsWith('/dist/src/cli/main.js')) ?? '';
  const under = (p: string) => p.startsWith(root.replace(/\/$/, '') + '/');
  if (!under(exe) || !under(main)) {
    throw new Error(`agent pid ${pid} does not run from ${root}: exe ${exe}, command line ${args.join(' ')}`);
  }
  return { exe, main };
}

export interface RunningAgent {
  child: ChildProcess;
  dir: string;
  eventsPath: string;
  stderr: () => string;
  /** what the agent printed on stdout (the console sink) */
  stdout: () => string;
  records: () => OomRecord[];
  waitFor: (pred: (rs: OomRecord[]) => boolean, timeoutMs: number, what: string) => Promise<OomRecord[]>;
  stop: (signal?: NodeJS.Signals) => Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
  /** Resolves when the process has exited (sends nothing). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function readJsonl(file: string): OomRecord[] {
  if (!fs.existsSync(file)) return [];
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  // the last piece has no newline yet: a line the agent is still writing (read mid-write in a 1,000-kill sweep)
  lines.pop();
  return lines.filter((l) => l.trim()).map((l) => JSON.parse(l) as OomRecord);
}

export interface StartOptions {
  /** Reuse this directory (config, spool) instead of a fresh temp dir: a restart with the same config. */
  dir?: string;
  /** Where the JSONL sink writes; default `<dir>/events.jsonl`. */
  eventsPath?: string;
  /**
   * Why this agent may count missed kills (oomtrail_missed_kills_total > 0). Without it, `stop()`
   * fails when the agent reported any. Give it only to an agent that misses kills by design: one
   * restarted on a state directory with the backfill off (kills anywhere on the host while it was
   * down are missed), or one that is meant to miss them.
   */
  allowMissedKills?: string;
  /** Command line that runs the agent's command (e.g. `unshare … sh -c '…; exec "$@"' sh`); the agent must `exec`. */
  wrap?: string[];
}

/**
 * The audit's grace in e2e runs unless a test sets its own: short-lived agents report a miss too
 * (the default 10 s outlives most of them, and an unreported miss passes unnoticed). Not shorter: a
 * kill logged while the collector attaches is recorded after the backfill's 2 s settle pass.
 */
export const TEST_AUDIT_GRACE_MS = 5000;

/** Missed kills an agent reported: the audit logs one warning each time oomtrail_missed_kills_total grows. */
export function missedKillsLogged(stderr: string): number {
  let n = 0;
  for (const m of stderr.matchAll(/warn audit: the kernel counted \d+ OOM kill\(s\) .*?: (\d+) missed/g)) n = Math.max(n, Number(m[1]));
  return n;
}

/**
 * The agent config every e2e test starts from: JSONL sink only, fast batches, a private spool, no
 * kernel-log backfill (a fresh state dir would record every kill the kernel log holds, other tests'
 * too). An `extraConfig` with its own top-level `collectors:` replaces that part (backfill then on,
 * unless it says otherwise); OOMTRAIL_COLLECTORS_OOMKILL_BACKFILL=true in the env turns it on.
 */
export function testConfigYaml(eventsPath: string, spoolDir: string, extraConfig = ''): string {
  const collectors = /^collectors:/m.test(extraConfig) ? [] : ['collectors:', '  oomkill:', '    backfill: false'];
  // the e2e audit grace, in the file (the start-up line names the config sources: keep them as they were)
  const grace = `    audit_grace_ms: ${TEST_AUDIT_GRACE_MS}`;
  if (!/audit_grace_ms/.test(extraConfig)) {
    if (collectors.length > 0) collectors.push(grace);
    else if (/^  oomkill:$/m.test(extraConfig)) extraConfig = extraConfig.replace(/^  oomkill:$/m, `  oomkill:\n${grace}`);
    else extraConfig = extraConfig.replace(/^collectors:$/m, `collectors:\n  oomkill:\n${grace}`);
  }
  return [
    ...collectors,
    'sinks:',
    '  console:',
    '    enabled: false',
    '  file:',
    `    path: ${JSON.stringify(eventsPath)}`,
    'pipeline:',
    '  batch:',
    '    max_age_ms: 100',
    '  spool:',
    `    dir: ${JSON.stringify(spoolDir)}`,
    extraConfig,
  ].join('\n');
}

/** Starts the real agent (`oomtrail run`) with the JSONL sink in a temp dir and waits until it is capturing. */
export async function startAgent(extraConfig = '', env: NodeJS.ProcessEnv = {}, opts: StartOptions = {}): Promise<RunningAgent> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-e2e-'));
  fs.mkdirSync(dir, { recursive: true });
  const eventsPath = opts.eventsPath ?? path.join(dir, 'events.jsonl');
  const configPath = path.join(dir, 'config.yaml');
  fs.writeFileSync(
    configPath,
    testConfigYaml(eventsPath, path.join(dir, 'spool'), extraConfig),
  );
  if (AGENT && !AGENT_ROOT) throw new Error('OOMTRAIL_E2E_AGENT needs OOMTRAIL_E2E_AGENT_ROOT (where its node and main.js must be)');
  const argv = AGENT ? [AGENT, 'run', '--config', configPath] : [process.execPath, MAIN, 'run', '--config', configPath];
  const cmd = [...(opts.wrap ?? []), ...argv];
  const child = spawn(cmd[0], cmd.slice(1), {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  // loading BPF objects takes seconds under software emulation (the VM matrix) on a busy host
  const deadline = Date.now() + 60_000;
  while (!/oomtrail \S+ started:/.test(err)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`agent did not start (exit ${child.exitCode}):\n${err}`);
    }
    await sleep(50);
  }
  if (AGENT_ROOT) {
    try {
      assertAgentFrom(child.pid!, AGENT_ROOT);
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
  }
  const records = () => readJsonl(eventsPath);
  return {
    child,
    dir,
    eventsPath,
    stderr: () => err,
    stdout: () => out,
    records,
    exited,
    async waitFor(pred, timeoutMs, what) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const rs = records();
        if (pred(rs)) return rs;
        if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; agent log:\n${err.slice(-4000)}`);
        await sleep(100);
      }
    },
    async stop(signal = 'SIGTERM') {
      const t0 = Date.now();
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const r = await exited;
      const ms = Date.now() - t0;
      // the e2e suite's standing check: an agent never misses a kill unless the test says why it may
      const missed = missedKillsLogged(err);
      if (missed > 0 && opts.allowMissedKills === undefined) {
        const line = err.split('\n').filter((l) => /warn audit: the kernel counted|backfill: |journal: re-emitted/.test(l)).join('\n');
        throw new Error(`agent pid ${child.pid} reported ${missed} missed OOM kill(s) (oomtrail_missed_kills_total), and the test allows none:\n${line}`);
      }
      return { ...r, ms };
    },
  };
}
