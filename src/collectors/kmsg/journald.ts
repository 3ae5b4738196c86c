import { spawn } from 'node:child_process';
import readline from 'node:readline';
import type { KmsgRecord } from './kmsg';
import { looksLikeOomLine, rejectKernelLine } from './lines';

/*
 * systemd-journald's copy of the kernel log, read through journalctl: it keeps what the printk ring
 * has overwritten, and previous boots. Read only after the fact (at start), bounded in time and lines.
 */

export type JournaldErrorCode = 'JOURNALCTL_MISSING' | 'JOURNAL_EMPTY' | 'JOURNALCTL_FAILED' | 'JOURNALCTL_TIMEOUT' | 'JOURNALCTL_ABORTED';

export class JournaldError extends Error {
  constructor(
    readonly code: JournaldErrorCode,
    message: string,
    /** true when a later start may succeed without a change of configuration */
    readonly retriable: boolean,
  ) {
    super(message);
    this.name = 'JournaldError';
  }
}

export interface JournalctlOptions {
  /** a journal directory (`--directory`); '' = journalctl's default, the system journal */
  directory: string;
  /** the whole journalctl run, milliseconds */
  timeoutMs: number;
  /** journalctl itself; tests may point elsewhere */
  binary?: string;
  signal?: AbortSignal;
}

/** A boot the journal holds; ids in /proc's form (8-4-4-4-12), as records carry them. */
export interface JournalBoot {
  bootId: string;
  firstUs: number;
  lastUs: number;
}

/** One kernel line from the journal: the kmsg record plus when journald received it, and its cursor. */
export interface JournalKernelRecord extends KmsgRecord {
  /** wall clock (µs) when journald stored the line */
  realtimeUs: number;
  /** CLOCK_MONOTONIC (µs) when journald stored the line: `usec` (the kernel's) is on nearly the same clock */
  monotonicUs: number;
  cursor: string;
}

/** "093f2754c0bb40ca81c29e3863e2071f" → "093f2754-c0bb-40ca-81c2-9e3863e2071f" */
export function dashedBootId(id: string): string {
  const h = id.replace(/-/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(h)) return id;
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const plainBootId = (id: string) => id.replace(/-/g, '').toLowerCase();

/** Only the lines the backfill uses: the kill, its context (rate limited), and the boot's kernel release. */
const OOM_PATTERN = 'Killed process|invoked oom-killer|^oom-kill:|^Linux version ';
const LINUX_VERSION = /^Linux version (\S+)/;

interface RunResult {
  code: number | null;
  stderr: string;
  /** stopped after `maxLines` */
  truncated: boolean;
}

/** Runs journalctl, handing each stdout line to `onLine`; never longer than `timeoutMs`. */
function run(args: string[], opts: JournalctlOptions, onLine: (line: string) => void, maxLines = Infinity): Promise<RunResult> {
  const bin = opts.binary ?? 'journalctl';
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(new JournaldError('JOURNALCTL_ABORTED', 'stopped', true));
    const child = spawn(bin, [...(opts.directory ? [`--directory=${opts.directory}`] : []), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // journalctl pipes into a pager and colours output only on a terminal; say so anyway
      env: { ...process.env, SYSTEMD_PAGER: 'cat', SYSTEMD_COLORS: '0', LC_ALL: 'C.UTF-8' },
    });
    let stderr = '';
    let lines = 0;
    let truncated = false;
    let failure: JournaldError | null = null;
    const stop = (err: JournaldError | null) => {
      failure ??= err;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => stop(new JournaldError('JOURNALCTL_TIMEOUT', `journalctl ran longer than ${opts.timeoutMs} ms`, true)), opts.timeoutMs);
    const onAbort = () => stop(new JournaldError('JOURNALCTL_ABORTED', 'stopped', true));
    opts.signal?.addEventListener('abort', onAbort);
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    const rl = readline.createInterface({ input: child.stdout, crlfDelay: Infinity });
    rl.on('line', (line) => {
      if (truncated || failure) return;
      if (++lines > maxLines) {
        truncated = true;
        stop(null);
        return;
      }
      onLine(line);
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      reject(
        err.code === 'ENOENT'
          ? new JournaldError('JOURNALCTL_MISSING', `${bin} not found`, false)
          : new JournaldError('JOURNALCTL_FAILED', `${bin}: ${err.message}`, true),
      );
    });
    // 'close': stdout is fully read by then
    child.on('close', (code) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (failure) reject(failure);
      else resolve({ code, stderr: stderr.trim(), truncated });
    });
  });
}

function failed(what: string, r: RunResult): JournaldError {
  const msg = r.stderr.split('\n')[0] || `exit ${r.code}`;
  // "No journal files were found.": nothing to read, not an error (a missing --directory is: it was configured)
  if (/no journal files|no entries/i.test(msg)) return new JournaldError('JOURNAL_EMPTY', msg, true);
  return new JournaldError('JOURNALCTL_FAILED', `journalctl ${what}: ${msg}`, true);
}

/** The boots the journal holds, oldest first. Throws JournaldError. */
export async function listBoots(opts: JournalctlOptions): Promise<JournalBoot[]> {
  let out = '';
  const r = await run(['--list-boots', '-o', 'json', '--no-pager', '-q'], opts, (l) => {
    if (out.length < 4 * 1024 * 1024) out += l + '\n';
  });
  if (r.code !== 0) throw failed('--list-boots', r);
  if (out.trim() === '' || out.trim() === '[]') return [];
  let rows: Array<{ boot_id?: string; first_entry?: number; last_entry?: number }>;
  try {
    rows = JSON.parse(out) as typeof rows;
  } catch {
    // systemd < 251 (Debian 11's 247) ignores -o json for --list-boots and prints its table, oldest first
    const table = listBootsTable(out);
    if (table) return table;
    throw new JournaldError('JOURNALCTL_FAILED', 'journalctl --list-boots: output is neither JSON nor its table', false);
  }
  return rows
    .filter((b) => typeof b.boot_id === 'string')
    .map((b) => ({ bootId: dashedBootId(b.boot_id!), firstUs: Number(b.first_entry ?? 0), lastUs: Number(b.last_entry ?? 0) }))
    .sort((a, b) => a.firstUs - b.firstUs);
}

/**
 * `journalctl --list-boots` as a table ("-1 <32 hex> <first>—<last>" per line, oldest first): the boot ids in that
 * order; the times (local, formatted) are not parsed, so firstUs/lastUs are 0. Null when a line is not such a row.
 */
export function listBootsTable(out: string): JournalBoot[] | null {
  const boots: JournalBoot[] = [];
  for (const line of out.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^\s*-?\d{1,9}\s+([0-9a-f]{32})\s/.exec(line);
    if (!m) return null;
    boots.push({ bootId: dashedBootId(m[1]), firstUs: 0, lastUs: 0 });
  }
  return boots.length ? boots : null;
}

export interface KernelOomLines {
  /** oldest first; `seq` is the index in this list (journald keeps no kmsg sequence number) */
  records: JournalKernelRecord[];
  /** the boot's kernel release, from its first line ("Linux version …"), when read this time */
  kernelRelease: string | null;
  /** the run stopped at `maxLines`: more follows the last record */
  truncated: boolean;
}

function field(v: unknown): string | null {
  if (typeof v === 'string') return v;
  // journalctl prints a value that is not printable UTF-8 as an array of bytes
  if (Array.isArray(v) && v.every((x) => typeof x === 'number')) return Buffer.from(v as number[]).toString('utf8');
  return null;
}

/**
 * The kernel's OOM lines of one boot (facility kern: a line a process wrote to /dev/kmsg is not the
 * kernel's), after `afterCursor` when given. Throws JournaldError.
 */
export async function readKernelOomLines(
  bootId: string,
  opts: JournalctlOptions & { afterCursor?: string | null; maxLines: number },
): Promise<KernelOomLines> {
  const records: JournalKernelRecord[] = [];
  let kernelRelease: string | null = null;
  const base = [`_BOOT_ID=${plainBootId(bootId)}`, '_TRANSPORT=kernel', 'SYSLOG_FACILITY=0'];
  const tail = ['-o', 'json', '--output-fields=MESSAGE,_SOURCE_MONOTONIC_TIMESTAMP,_TRANSPORT,SYSLOG_FACILITY', '--no-pager', '-q'];
  if (opts.afterCursor) tail.push(`--after-cursor=${opts.afterCursor}`);
  const onLine = (grepped: boolean) => (line: string) => {
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const message = field(e.MESSAGE);
    const usec = Number(field(e._SOURCE_MONOTONIC_TIMESTAMP) ?? NaN);
    const cursor = field(e.__CURSOR);
    if (message === null || !Number.isFinite(usec) || cursor === null) return;
    // the match above asks for these; an entry that does not carry them is not believed (a line a
    // process wrote to /dev/kmsg reaches the journal with _TRANSPORT=kernel and a facility of its own)
    if (field(e._TRANSPORT) !== 'kernel' || field(e.SYSLOG_FACILITY) !== '0') {
      if (looksLikeOomLine(message)) rejectKernelLine('not_kernel', message);
      return;
    }
    if (!grepped && !new RegExp(OOM_PATTERN).test(message)) return;
    const v = LINUX_VERSION.exec(message);
    if (v) {
      kernelRelease = v[1];
      return;
    }
    records.push({
      seq: records.length,
      usec,
      message,
      realtimeUs: Number(field(e.__REALTIME_TIMESTAMP) ?? 0),
      monotonicUs: Number(field(e.__MONOTONIC_TIMESTAMP) ?? 0),
      cursor,
    });
  };
  let r = await run([...base, `--grep=${OOM_PATTERN}`, ...tail], opts, onLine(true), opts.maxLines);
  if (r.code !== 0 && !r.truncated && /pattern|pcre/i.test(r.stderr)) {
    // a journalctl built without PCRE2: every kernel line of the boot, filtered here
    records.length = 0;
    r = await run([...base, ...tail], opts, onLine(false), opts.maxLines);
  }
  // with --grep, "no match" is exit 1 and nothing on stderr
  if (r.code !== 0 && !r.truncated && r.stderr !== '') throw failed('kernel lines', r);
  return { records, kernelRelease, truncated: r.truncated };
}
