import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../observe/logger';

/** One kill this host recorded (live or backfilled), as kept in `<spool.dir>/kills.jsonl`. */
export interface LedgerEntry {
  /** boot id */
  b: string;
  /** victim pid */
  p: number;
  /** kill time on the printk clock (µs since boot, suspend not counted), comparable with /dev/kmsg */
  t: number;
  /** event_id of the record */
  e: string;
  /** the victim's memory cgroup, when known */
  c?: string;
}

/** Per-boot state beside the ledger: how far the kernel log was read, and the audit's baseline. */
export interface LedgerState {
  boot_id: string;
  /** highest /dev/kmsg seq the backfill has looked at; -1 = none */
  kmsg_seq: number;
  /** /proc/vmstat oom_kill when the first agent of this boot started, and when (printk clock, µs) */
  audit_base_kills: number | null;
  audit_base_us: number | null;
  /** per memory cgroup: its own oom_kill counter when the audit first saw it this boot, and when (printk µs) */
  cg_base?: Record<string, [number, number]>;
}

export const LEDGER_FILE = 'kills.jsonl';
export const LEDGER_STATE_FILE = 'kills.state.json';

/** Kills of the same pid this close on the printk clock are one kill (live capture vs its log line). */
const MATCH_US = 10_000_000;

/**
 * What this host recorded this boot, kept across restarts so that the kernel-log backfill never
 * records a kill twice and the audit can compare with the kernel's counters. Lines are appended
 * with a plain write: they survive a crash of the process (page cache), not a power loss — which
 * also loses the kernel log they are compared with.
 */
export class KillLedger {
  private readonly entries: LedgerEntry[] = [];
  private readonly ids = new Set<string>();
  private readonly byPid = new Map<number, number[]>();
  private constructor(
    private readonly file: string,
    private readonly stateFile: string,
    readonly bootId: string,
    public state: LedgerState,
  ) {}

  static open(dir: string, bootId: string): KillLedger {
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, LEDGER_FILE);
    const stateFile = path.join(dir, LEDGER_STATE_FILE);
    const { entries, otherBoots } = readLedger(file, bootId);
    let state = readLedgerState(stateFile);
    if (!state || state.boot_id !== bootId) state = { boot_id: bootId, kmsg_seq: -1, audit_base_kills: null, audit_base_us: null };
    const ledger = new KillLedger(file, stateFile, bootId, state);
    for (const e of entries) ledger.remember(e);
    // a previous boot's kills can never match this boot's log: keep only this boot's lines
    if (otherBoots) {
      const tmp = `${file}.tmp`;
      fs.writeFileSync(tmp, ledger.entries.map((e) => JSON.stringify(e) + '\n').join(''));
      fs.renameSync(tmp, file);
    }
    return ledger;
  }

  /** Kills recorded this boot. */
  get count(): number {
    return this.entries.length;
  }

  has(eventId: string): boolean {
    return this.ids.has(eventId);
  }

  private since: { us: number; n: number } | null = null;

  /** Kills recorded this boot at or after `sinceUs` (printk clock); counted once per threshold, then kept up to date. */
  countSince(sinceUs: number): number {
    if (this.since?.us !== sinceUs) {
      let n = 0;
      for (const e of this.entries) if (e.t >= sinceUs) n++;
      this.since = { us: sinceUs, n };
    }
    return this.since.n;
  }

  /** Records a kill (idempotent per event_id). */
  add(pid: number, tUs: number, eventId: string, cgroup = ''): void {
    if (this.ids.has(eventId)) return;
    const e: LedgerEntry = { b: this.bootId, p: pid, t: Math.round(tUs), e: eventId, ...(cgroup ? { c: cgroup } : {}) };
    fs.appendFileSync(this.file, JSON.stringify(e) + '\n');
    this.remember(e);
  }

  /** Kills recorded per victim cgroup, each counted from that cgroup's own start time on. */
  countByCgroupSince(since: ReadonlyMap<string, number>): Map<string, number> {
    const out = new Map<string, number>();
    for (const e of this.entries) {
      const t = e.c === undefined ? undefined : since.get(e.c);
      if (t !== undefined && e.t >= t) out.set(e.c!, (out.get(e.c!) ?? 0) + 1);
    }
    return out;
  }

  /** Whether a kill of `pid` logged at `usec` was already recorded (live capture or an earlier backfill). */
  matches(pid: number, usec: number): boolean {
    for (const t of this.byPid.get(pid) ?? []) if (Math.abs(t - usec) <= MATCH_US) return true;
    return false;
  }

  saveState(): void {
    const tmp = `${this.stateFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(this.state));
    fs.renameSync(tmp, this.stateFile);
  }

  private remember(e: LedgerEntry): void {
    this.entries.push(e);
    if (this.since && e.t >= this.since.us) this.since.n++;
    this.ids.add(e.e);
    const list = this.byPid.get(e.p) ?? [];
    list.push(e.t);
    this.byPid.set(e.p, list);
  }
}

function readLedger(file: string, bootId: string): { entries: LedgerEntry[]; otherBoots: boolean } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [], otherBoots: false };
    throw err;
  }
  const entries: LedgerEntry[] = [];
  let otherBoots = false;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let e: LedgerEntry;
    try {
      e = JSON.parse(line) as LedgerEntry;
    } catch {
      continue; // a torn last line from a crash mid-append
    }
    if (e.b === bootId && typeof e.p === 'number' && typeof e.t === 'number' && typeof e.e === 'string') entries.push(e);
    else otherBoots = true;
  }
  return { entries, otherBoots };
}

function readLedgerState(file: string): LedgerState | null {
  try {
    const s = JSON.parse(fs.readFileSync(file, 'utf8')) as LedgerState;
    return typeof s.boot_id === 'string' && typeof s.kmsg_seq === 'number' ? s : null;
  } catch {
    return null;
  }
}

/** Kills recorded this boot per the ledger in `dir`, for `oomtrail check` (0 when there is none). */
/** The kernel's OOM kill count since boot (/proc/vmstat oom_kill); null where it cannot be read. */
export function readVmstatOomKills(): number | null {
  try {
    const m = /^oom_kill (\d+)$/m.exec(fs.readFileSync('/proc/vmstat', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export function recordedThisBoot(dir: string, bootId: string): number {
  try {
    return new Set(readLedger(path.join(dir, LEDGER_FILE), bootId).entries.map((e) => e.e)).size;
  } catch {
    return 0;
  }
}

/** Enters a kill in the ledger; a write failure is logged, never thrown: the record still goes out. */
export function noteKill(ledger: KillLedger, logger: Logger, pid: number, tUs: number, eventId: string, cgroup = ''): void {
  try {
    ledger.add(pid, tUs, eventId, cgroup);
  } catch (err) {
    logger.warn(`kill ledger: cannot record pid ${pid}: ${(err as Error).message}`);
  }
}
