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
  /** per boot read from systemd-journald this boot: the cursor after the last line examined, and that boot's kernel release */
  journald?: Record<string, { cursor: string; kernel: string | null }>;
}

export const LEDGER_FILE = 'kills.jsonl';
export const LEDGER_STATE_FILE = 'kills.state.json';

/** Kills of the same pid this close on the printk clock are one kill (live capture vs its log line). */
const MATCH_US = 10_000_000;
/** Bound on the other boots kept before the journal's own boot list prunes them (retainBoots). */
const MAX_OTHER_BOOTS = 32;
/** Bound on ledger lines kept in memory while the disk refuses them. */
const MAX_UNWRITTEN = 10_000;

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
  /** previous boots' kills (for the journald backfill): boot id → pid → printk times */
  private readonly others = new Map<string, { entries: LedgerEntry[]; byPid: Map<number, number[]> }>();
  private constructor(
    private readonly file: string,
    private readonly stateFile: string,
    readonly bootId: string,
    public state: LedgerState,
  ) {}

  /**
   * `keepOtherBoots`: keep previous boots' kills (up to 32 boots, until `retainBoots` names the ones
   * to keep) so that a previous boot read again from the journal is not recorded twice; otherwise a
   * previous boot's kills can never match this boot's log and are dropped.
   */
  static open(dir: string, bootId: string, keepOtherBoots = false): KillLedger {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, LEDGER_FILE);
    const stateFile = path.join(dir, LEDGER_STATE_FILE);
    // both name tenants' cgroups: 0600 whatever the umask, also when an older version made them
    for (const f of [file, stateFile]) {
      try {
        fs.chmodSync(f, 0o600);
      } catch {
        /* not there yet: created 0600 below */
      }
    }
    const { entries, others } = readLedger(file, bootId);
    let state = readLedgerState(stateFile);
    if (!state || state.boot_id !== bootId) state = { boot_id: bootId, kmsg_seq: -1, audit_base_kills: null, audit_base_us: null };
    const ledger = new KillLedger(file, stateFile, bootId, state);
    for (const e of entries) ledger.remember(e);
    if (keepOtherBoots) {
      const boots = [...new Set(others.map((e) => e.b))];
      const keep = new Set(boots.slice(-MAX_OTHER_BOOTS));
      for (const e of others) if (keep.has(e.b)) ledger.rememberOther(e);
      if (keep.size < boots.length) ledger.rewrite();
    } else if (others.length > 0) ledger.rewrite();
    return ledger;
  }

  /** Drops the kills of every other boot not in `bootIds` (the journal's boots still of interest). */
  retainBoots(bootIds: Iterable<string>): void {
    const keep = new Set(bootIds);
    let dropped = false;
    for (const b of [...this.others.keys()]) {
      if (keep.has(b)) continue;
      for (const e of this.others.get(b)!.entries) this.ids.delete(e.e);
      this.others.delete(b);
      dropped = true;
    }
    if (dropped) this.rewrite();
  }

  /** Previous boots whose kills the ledger holds. */
  otherBoots(): string[] {
    return [...this.others.keys()];
  }

  private rewrite(): void {
    const all = [...[...this.others.values()].flatMap((o) => o.entries), ...this.entries];
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, all.map((e) => JSON.stringify(e) + '\n').join(''), { mode: 0o600 });
    fs.chmodSync(tmp, 0o600); // a stale tmp keeps its old mode
    fs.renameSync(tmp, this.file);
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

  /** Records a kill (idempotent per event_id); `bootId` other than this boot's: a previous boot's kill. */
  add(pid: number, tUs: number, eventId: string, cgroup = '', bootId = this.bootId): void {
    if (this.ids.has(eventId)) return;
    const e: LedgerEntry = { b: bootId, p: pid, t: Math.round(tUs), e: eventId, ...(cgroup ? { c: cgroup } : {}) };
    // known in memory first: the audit of this run counts the kill even when the disk refuses the line
    if (bootId === this.bootId) this.remember(e);
    else this.rememberOther(e);
    this.unwritten.push(JSON.stringify(e) + '\n');
    if (this.unwritten.length > MAX_UNWRITTEN) this.unwritten.shift();
    // lines the disk refused before (full, read-only) go first, in order, with this one
    // a failed append may have left part of a line: start on a fresh line (readers skip blank and torn ones)
    const text = (this.unwrittenFailed ? '\n' : '') + this.unwritten.join('');
    this.unwrittenFailed = true;
    fs.appendFileSync(this.file, text, { mode: 0o600 });
    this.unwrittenFailed = false;
    this.unwritten.length = 0;
  }

  private unwrittenFailed = false;

  /** Lines not yet on disk (the append failed), written before the next one. */
  private readonly unwritten: string[] = [];

  /** Kills recorded per victim cgroup, each counted from that cgroup's own start time on. */
  countByCgroupSince(since: ReadonlyMap<string, number>): Map<string, number> {
    const out = new Map<string, number>();
    for (const e of this.entries) {
      const t = e.c === undefined ? undefined : since.get(e.c);
      if (t !== undefined && e.t >= t) out.set(e.c!, (out.get(e.c!) ?? 0) + 1);
    }
    return out;
  }

  /** Kills recorded this boot at or after `sinceUs` whose victim cgroup is unknown (a kernel log line without its `oom-kill:` line). */
  countWithoutCgroupSince(sinceUs: number): number {
    let n = 0;
    for (const e of this.entries) if (e.c === undefined && e.t >= sinceUs) n++;
    return n;
  }

  /** The victim cgroup of this boot's recorded kill of `pid` logged near `usec`, when recorded with one. */
  cgroupOf(pid: number, usec: number): string | undefined {
    for (const e of this.entries) if (e.p === pid && Math.abs(e.t - usec) <= MATCH_US) return e.c;
    return undefined;
  }

  /** Whether a kill of `pid` logged at `usec` (in boot `bootId`) was already recorded (live capture or an earlier backfill). */
  matches(pid: number, usec: number, bootId = this.bootId): boolean {
    const byPid = bootId === this.bootId ? this.byPid : this.others.get(bootId)?.byPid;
    for (const t of byPid?.get(pid) ?? []) if (Math.abs(t - usec) <= MATCH_US) return true;
    return false;
  }

  saveState(): void {
    const tmp = `${this.stateFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(this.state), { mode: 0o600 });
    fs.chmodSync(tmp, 0o600); // a stale tmp keeps its old mode
    fs.renameSync(tmp, this.stateFile);
  }

  private rememberOther(e: LedgerEntry): void {
    let o = this.others.get(e.b);
    if (!o) this.others.set(e.b, (o = { entries: [], byPid: new Map() }));
    o.entries.push(e);
    this.ids.add(e.e);
    const list = o.byPid.get(e.p) ?? [];
    list.push(e.t);
    o.byPid.set(e.p, list);
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

function readLedger(file: string, bootId: string): { entries: LedgerEntry[]; others: LedgerEntry[] } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [], others: [] };
    throw err;
  }
  const entries: LedgerEntry[] = [];
  const others: LedgerEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let e: LedgerEntry;
    try {
      e = JSON.parse(line) as LedgerEntry;
    } catch {
      continue; // a torn last line from a crash mid-append
    }
    if (typeof e.b !== 'string' || typeof e.p !== 'number' || typeof e.t !== 'number' || typeof e.e !== 'string') continue;
    (e.b === bootId ? entries : others).push(e);
  }
  return { entries, others };
}

function readLedgerState(file: string): LedgerState | null {
  try {
    const s = JSON.parse(fs.readFileSync(file, 'utf8')) as LedgerState;
    return typeof s.boot_id === 'string' && typeof s.kmsg_seq === 'number' ? s : null;
  } catch {
    return null;
  }
}

/** The kernel's OOM kill count since boot (/proc/vmstat oom_kill); null where it cannot be read. */
export function readVmstatOomKills(): number | null {
  try {
    const m = /^oom_kill (\d+)$/m.exec(fs.readFileSync('/proc/vmstat', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}


/**
 * How the kernel's count of this boot's kills compares with one state dir's records. The kernel counts every
 * kill (/proc/vmstat oom_kill); its log is a ring that overwrites old lines; and a state dir holds only what the
 * agents using it recorded — an agent with another `pipeline.spool.dir` records into its own, which cannot be
 * seen from here, so a kill the log holds but this dir does not is "not in this state dir", not "missed".
 */
export interface KillAccount {
  /** /proc/vmstat oom_kill since boot; null where unreadable */
  kernel: number | null;
  /** kill reports the kernel log still holds; null where /dev/kmsg is unreadable */
  in_kernel_log: number | null;
  /** kernel − in_kernel_log: kills whose lines the log no longer holds (overwritten or rate-limited) */
  gone_from_log: number | null;
  /** kills this state dir's ledger holds for this boot */
  recorded_here: number;
  /** of those in the kernel log, how many this state dir has not recorded (what a backfill here would record) */
  in_log_not_here: number | null;
}

/** The account for `dir` (read only: nothing is created), given the kills the kernel log holds. */
export function accountKills(dir: string, bootId: string, kernel: number | null, logKills: ReadonlyArray<{ pid: number; usec: number }> | null): KillAccount {
  let entries: LedgerEntry[] = [];
  try {
    entries = readLedger(path.join(dir, LEDGER_FILE), bootId).entries;
  } catch {
    /* unreadable: nothing recorded that we can see */
  }
  const recorded = new Set(entries.map((e) => e.e)).size;
  const matched = (k: { pid: number; usec: number }) => entries.some((e) => e.p === k.pid && Math.abs(e.t - k.usec) <= MATCH_US);
  const inLog = logKills ? logKills.length : null;
  return {
    kernel,
    in_kernel_log: inLog,
    gone_from_log: kernel !== null && inLog !== null ? Math.max(0, kernel - inLog) : null,
    recorded_here: recorded,
    in_log_not_here: logKills ? logKills.filter((k) => !matched(k)).length : null,
  };
}

/** The account in words, for `oomtrail check` and the start-up backfill's summary. */
export function describeKillAccount(a: KillAccount, dir: string): string[] {
  const out = [`kernel ${a.kernel ?? 'unknown'}, recorded in this state dir (${dir}) ${a.recorded_here}`];
  if (a.in_kernel_log === null) out.push('the kernel log (/dev/kmsg) cannot be read: the difference cannot be explained here');
  else {
    if (a.gone_from_log) out.push(`${a.gone_from_log} no longer in the kernel log (its ring overwrote them): only the journald backfill can still find them`);
    out.push(
      `${a.in_kernel_log} in the kernel log: ${a.in_kernel_log - (a.in_log_not_here ?? 0)} recorded in this state dir, ` +
        `${a.in_log_not_here ?? 0} not in this state dir (recorded by an agent with another state dir, or by none)`,
    );
  }
  return out;
}

/** Enters a kill in the ledger; a write failure is logged, never thrown: the record still goes out. */
export function noteKill(ledger: KillLedger, logger: Logger, pid: number, tUs: number, eventId: string, cgroup = ''): void {
  try {
    ledger.add(pid, tUs, eventId, cgroup);
  } catch (err) {
    logger.warn(`kill ledger: cannot record pid ${pid}: ${(err as Error).message}`);
  }
}
