import fs from 'node:fs';
import path from 'node:path';
import { isAscii } from 'node:buffer';
import { StringDecoder } from 'node:string_decoder';
import type { KernelKillReport } from '../collectors/kmsg/lines';
import type { Logger } from '../observe/logger';
import type { OomRecord } from '../record/record';

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
  /** the kill's key (`killKeyOfLine`/`killKeyOfRecord`): what both the live capture and the kernel's line carry */
  k?: number;
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
  /** this boot's oldest kills dropped from the ledger at its cap: how many, and their printk time span (µs) */
  evicted?: { n: number; min_us: number; max_us: number };
  /** previous boots dropped from the ledger, summarised: boot id → kills recorded (newest 32) */
  past_boots?: Record<string, number>;
}

export const LEDGER_FILE = 'kills.jsonl';
export const LEDGER_STATE_FILE = 'kills.state.json';

/**
 * Kills of the same pid this close on the printk clock are one kill (live capture vs its log line).
 * Only a fallback now: a live kill's printk time is derived through CLOCK_MONOTONIC, which NTP slews
 * while the kernel log's clock is not, so after days of uptime the two drift apart by more than this.
 * Kills are matched on their key (pid + the `Killed process` line's numbers) first.
 */
const MATCH_US = 10_000_000;
/** Bound on the other boots kept before the journal's own boot list prunes them (retainBoots). */
const MAX_OTHER_BOOTS = 32;
/** Bound on ledger lines kept in memory while the disk refuses them. */
const MAX_UNWRITTEN = 10_000;
/**
 * Kills kept per boot (in memory ~50 B each, on disk ~130 B). At the cap the oldest half of the boot's
 * kills are dropped and only counted (state `evicted`): their kernel-log lines lie before the saved log
 * position (kmsg seq, journald cursor), so no backfill reads them again; the audit still counts them.
 */
export const LEDGER_MAX_KILLS_PER_BOOT = 500_000;
/** Victim cgroup names remembered for the audit (`cgroupOf`); the counts themselves work on hashes. */
const MAX_CGROUP_NAMES = 16_384;
const READ_CHUNK = 1 << 20;
/** Cgroup names of the newest lines kept while opening (see `nameCgroup`). */
const RECENT_NAMES = MAX_CGROUP_NAMES / 2;

/** 53-bit string hash (cyrb53): event ids and cgroups are kept as numbers, not strings. */
function hash53(s: string, from = 0, end = s.length): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  // two UTF-16 units per round: half the multiplications (a trailing odd unit pairs with 0)
  for (let i = from; i < end; i += 2) {
    const ch = s.charCodeAt(i) | ((i + 1 < end ? s.charCodeAt(i + 1) : 0) << 16);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** An event id as a 52-bit number: its first 13 hex digits (ids are sha256 digests), else hashed. */
function idHash(id: string, from = 0, end = id.length): number {
  if (end - from < 13) return hash53(id, from, end);
  let n = 0;
  for (let i = from; i < from + 13; i++) {
    const c = id.charCodeAt(i);
    const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1;
    if (d < 0) return hash53(id, from, end);
    n = n * 16 + d;
  }
  return n;
}

/** A kill key as a non-zero 32-bit integer (0 = none); compared only among kills of the same pid. */
function keyHash(parts: Array<string | number>): number {
  const h = hash53(parts.join('\u0000')) | 0;
  return h === 0 ? 1 : h;
}

/**
 * The key of a kill as the kernel logged it: pid, comm and the numbers of its `Killed process` line.
 * The BPF side reads the same mm counters the kernel prints, on no clock at all, so a live capture
 * and its log line have the same key however far CLOCK_MONOTONIC and the printk clock drifted.
 */
export function killKeyOfLine(k: KernelKillReport): number {
  return keyHash([k.pid, k.comm, k.totalVmKb, k.anonRssKb, k.fileRssKb, k.shmemRssKb, k.uid, k.pgtablesKb, k.oomScoreAdj]);
}

/** The same key from a record; null when the capture lacks one of the numbers (e.g. no task was read). */
export function killKeyOfRecord(
  r: Pick<OomRecord, 'victim_pid' | 'victim_comm' | 'victim_total_vm_kb' | 'victim_anon_rss_kb' | 'victim_file_rss_kb' | 'victim_shmem_rss_kb' | 'victim_uid' | 'victim_pgtables_kb' | 'victim_oom_score_adj'>,
): number | null {
  const nums = [r.victim_total_vm_kb, r.victim_anon_rss_kb, r.victim_file_rss_kb, r.victim_shmem_rss_kb, r.victim_uid, r.victim_pgtables_kb, r.victim_oom_score_adj];
  if (nums.some((n) => n === null || n === undefined)) return null;
  return keyHash([r.victim_pid, r.victim_comm, ...(nums as number[])]);
}

/**
 * One boot's kills in typed arrays (~50 B per kill, no object per kill), with two hash indexes
 * chained through the rows: by event id hash and by pid. Lookups are O(1) on average.
 */
class KillTable {
  n = 0;
  private cap: number;
  t: Float64Array;
  /** event id hash */
  eh: Float64Array;
  /** cgroup hash, -1 = none */
  cg: Float64Array;
  pid: Int32Array;
  /** kill key, 0 = none */
  key: Int32Array;
  private idHeads!: Int32Array;
  private idNext!: Int32Array;
  private pidHeads!: Int32Array;
  private pidNext!: Int32Array;
  private mask = 0;

  constructor(capacity = 1024) {
    this.cap = Math.max(16, capacity);
    this.t = new Float64Array(this.cap);
    this.eh = new Float64Array(this.cap);
    this.cg = new Float64Array(this.cap);
    this.pid = new Int32Array(this.cap);
    this.key = new Int32Array(this.cap);
    this.index();
  }

  /** (Re)builds both indexes over rows [0, n). */
  private index(): void {
    let buckets = 16;
    while (buckets < this.cap) buckets *= 2;
    this.mask = buckets - 1;
    this.idHeads = new Int32Array(buckets).fill(-1);
    this.pidHeads = new Int32Array(buckets).fill(-1);
    this.idNext = new Int32Array(this.cap);
    this.pidNext = new Int32Array(this.cap);
    for (let i = 0; i < this.n; i++) this.link(i);
  }

  private link(i: number): void {
    const b = (this.eh[i] >>> 0) & this.mask;
    this.idNext[i] = this.idHeads[b];
    this.idHeads[b] = i;
    const p = this.pid[i] & this.mask;
    this.pidNext[i] = this.pidHeads[p];
    this.pidHeads[p] = i;
  }

  private grow(): void {
    const cap = Math.ceil(this.cap * 1.5);
    const copy = <T extends Float64Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const b = make(cap);
      b.set(a.subarray(0, this.n));
      return b;
    };
    this.t = copy(this.t, (n) => new Float64Array(n));
    this.eh = copy(this.eh, (n) => new Float64Array(n));
    this.cg = copy(this.cg, (n) => new Float64Array(n));
    this.pid = copy(this.pid, (n) => new Int32Array(n));
    this.key = copy(this.key, (n) => new Int32Array(n));
    this.cap = cap;
    this.index();
  }

  findId(eh: number): number {
    for (let i = this.idHeads[(eh >>> 0) & this.mask]; i >= 0; i = this.idNext[i]) if (this.eh[i] === eh) return i;
    return -1;
  }

  push(t: number, eh: number, cg: number, pid: number, key: number): number {
    if (this.n === this.cap) this.grow();
    const i = this.n++;
    this.t[i] = t;
    this.eh[i] = eh;
    this.cg[i] = cg;
    this.pid[i] = pid;
    this.key[i] = key;
    this.link(i);
    return i;
  }

  /** A kill of `pid` with this key (when given), or logged within ±MATCH_US of `usec`. */
  find(pid: number, usec: number, key: number): number {
    for (let i = this.pidHeads[pid & this.mask]; i >= 0; i = this.pidNext[i]) {
      if (this.pid[i] !== pid) continue;
      if ((key !== 0 && this.key[i] === key) || Math.abs(this.t[i] - usec) <= MATCH_US) return i;
    }
    return -1;
  }

  /** Keeps rows [from, n) only (the oldest dropped at the cap). */
  dropOldest(from: number): void {
    const keep = this.n - from;
    for (const a of [this.t, this.eh, this.cg, this.pid, this.key]) a.copyWithin(0, from, this.n);
    this.n = keep;
    this.index();
  }
}

/** Calls `each` with every line of a file, read in 1 MiB chunks: the file is never held whole (it may exceed a string's max). */
function forEachLine(file: string, each: (line: string) => void): void {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    const dec = new StringDecoder('utf8');
    let carry = '';
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      // ASCII (the usual case) decodes faster as latin1; the decoder keeps a character cut at the chunk's end
      const chunk = buf.subarray(0, n);
      const text = carry + (isAscii(chunk) ? chunk.toString('latin1') : dec.write(chunk));
      let from = 0;
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', from)) {
        each(text.slice(from, nl));
        from = nl + 1;
      }
      carry = text.slice(from);
    }
    carry += dec.end();
    if (carry) each(carry);
  } finally {
    fs.closeSync(fd);
  }
}

/** A JSON integer at `from` up to `end` (exclusive), or NaN. */
function intAt(line: string, from: number, end: number): number {
  if (end <= from || end - from > 17) return NaN;
  let n = 0;
  let i = from;
  const neg = line.charCodeAt(i) === 45;
  if (neg) i++;
  if (i === end) return NaN;
  for (; i < end; i++) {
    const d = line.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return NaN;
    n = n * 10 + d;
  }
  return neg ? -n : n;
}

/**
 * The line as this ledger writes it (`{"b":…,"p":…,"t":…,"e":…[,"c":…][,"k":…]}`), read without
 * JSON.parse (a third of the load time at 400,000 kills); anything else (escapes, other order) goes
 * through JSON.parse.
 */
function parseOwnLine(line: string): LedgerEntry | null {
  if (!line.startsWith('{"b":"') || line.charCodeAt(line.length - 1) !== 125 || line.includes('\\')) return null;
  const bEnd = line.indexOf('"', 6);
  if (bEnd < 0 || !line.startsWith(',"p":', bEnd + 1)) return null;
  const pEnd = line.indexOf(',', bEnd + 6);
  if (pEnd < 0 || !line.startsWith(',"t":', pEnd)) return null;
  const tEnd = line.indexOf(',', pEnd + 5);
  if (tEnd < 0 || !line.startsWith(',"e":"', tEnd)) return null;
  const eEnd = line.indexOf('"', tEnd + 6);
  if (eEnd < 0) return null;
  const e: LedgerEntry = { b: line.slice(6, bEnd), p: intAt(line, bEnd + 6, pEnd), t: intAt(line, pEnd + 5, tEnd), e: line.slice(tEnd + 6, eEnd) };
  let at = eEnd + 1;
  if (line.startsWith(',"c":"', at)) {
    // no backslash in the line: no quote inside the string either
    const cEnd = line.indexOf('"', at + 6);
    if (cEnd < 0) return null;
    e.c = line.slice(at + 6, cEnd);
    at = cEnd + 1;
  }
  if (line.startsWith(',"k":', at)) {
    e.k = intAt(line, at + 5, line.length - 1);
    at = line.length - 1;
  }
  if (at !== line.length - 1 || Number.isNaN(e.p) || Number.isNaN(e.t) || Number.isNaN(e.k)) return null;
  return e;
}

function parseEntry(line: string): LedgerEntry | null {
  if (!line.trim()) return null;
  const own = parseOwnLine(line);
  if (own) return own;
  let e: LedgerEntry;
  try {
    e = JSON.parse(line) as LedgerEntry;
  } catch {
    return null; // a torn last line from a crash mid-append
  }
  if (typeof e.b !== 'string' || typeof e.p !== 'number' || typeof e.t !== 'number' || typeof e.e !== 'string') return null;
  return e;
}

/**
 * What this host recorded this boot, kept across restarts so that the kernel-log backfill never
 * records a kill twice and the audit can compare with the kernel's counters. Lines are appended
 * with a plain write: they survive a crash of the process (page cache), not a power loss — which
 * also loses the kernel log they are compared with. The file holds one line per kill (compacted at
 * open when it holds more), this boot's and those of the previous boots still read from the journal;
 * it is read line by line, and kept in memory as numbers (hashes), not one object per kill.
 */
export class KillLedger {
  private table = new KillTable();
  /** previous boots' kills (for the journald backfill) */
  private readonly others = new Map<string, KillTable>();
  /** cgroup hash → name, the newest MAX_CGROUP_NAMES at most: two generations, the older dropped whole */
  private cgNames = new Map<number, string>();
  private cgNamesOld = new Map<number, string>();
  private constructor(
    private readonly file: string,
    private readonly stateFile: string,
    readonly bootId: string,
    public state: LedgerState,
    private readonly maxPerBoot: number,
  ) {}

  /**
   * `keepOtherBoots`: keep previous boots' kills (up to 32 boots, until `retainBoots` names the ones
   * to keep) so that a previous boot read again from the journal is not recorded twice; otherwise a
   * previous boot's kills can never match this boot's log and are dropped (summarised as counts).
   */
  static open(dir: string, bootId: string, keepOtherBoots = false, maxPerBoot = LEDGER_MAX_KILLS_PER_BOOT): KillLedger {
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
    let state = readLedgerState(stateFile);
    if (!state || state.boot_id !== bootId) {
      state = { boot_id: bootId, kmsg_seq: -1, audit_base_kills: null, audit_base_us: null, ...(state?.past_boots ? { past_boots: state.past_boots } : {}) };
    }
    const ledger = new KillLedger(file, stateFile, bootId, state, maxPerBoot);
    let compact = false;
    const bootOrder: string[] = [];
    const own = `{"b":${JSON.stringify(bootId)},"p":`;
    ledger.recent = { line: new Array<string>(RECENT_NAMES), from: new Int32Array(RECENT_NAMES), end: new Int32Array(RECENT_NAMES), hash: new Float64Array(RECENT_NAMES), n: 0 };
    forEachLine(file, (line) => {
      if (line.startsWith(own)) {
        const r = ledger.loadOwnLine(line, own.length);
        if (r !== null) {
          if (!r) compact = true;
          return;
        }
      }
      const e = parseEntry(line);
      if (!e) {
        if (line.trim()) compact = true;
        return;
      }
      if (e.b !== bootId && !keepOtherBoots) {
        ledger.countDropped(e.b);
        compact = true;
        return;
      }
      if (e.b !== bootId && !ledger.others.has(e.b)) bootOrder.push(e.b);
      if (!ledger.remember(e)) compact = true; // a second line for one kill
    });
    // the newest names, copied out of the 1 MiB chunks their lines were sliced from (which they would keep alive)
    const r = ledger.recent;
    ledger.recent = null;
    for (let i = Math.max(0, r.n - RECENT_NAMES); i < r.n; i++) {
      const s = i % RECENT_NAMES;
      ledger.nameCgroup(r.hash[s], Buffer.from(r.line[s].slice(r.from[s], r.end[s]), 'utf8').toString('utf8'));
    }
    const drop = bootOrder.slice(0, Math.max(0, bootOrder.length - MAX_OTHER_BOOTS));
    for (const b of drop) ledger.dropBoot(b);
    if (compact || drop.length > 0 || ledger.evictedAtOpen) ledger.rewrite();
    ledger.evictedAtOpen = false;
    ledger.evictPending = false;
    return ledger;
  }

  private evictedAtOpen = false;

  /** A line of a boot not kept: counted (once per kill) for the boot's summary. */
  private countDropped(boot: string): void {
    this.state.past_boots ??= {};
    this.state.past_boots[boot] = (this.state.past_boots[boot] ?? 0) + 1;
    this.trimPastBoots();
  }

  private trimPastBoots(): void {
    const past = this.state.past_boots!;
    const boots = Object.keys(past);
    for (const b of boots.slice(0, Math.max(0, boots.length - MAX_OTHER_BOOTS))) delete past[b];
  }

  private dropBoot(b: string): void {
    const t = this.others.get(b);
    if (!t) return;
    this.state.past_boots ??= {};
    this.state.past_boots[b] = (this.state.past_boots[b] ?? 0) + t.n;
    this.trimPastBoots();
    this.others.delete(b);
  }

  /** Drops the kills of every other boot not in `bootIds` (the journal's boots still of interest). */
  retainBoots(bootIds: Iterable<string>): void {
    const keep = new Set(bootIds);
    let dropped = false;
    for (const b of [...this.others.keys()]) {
      if (keep.has(b)) continue;
      this.dropBoot(b);
      dropped = true;
    }
    if (dropped) this.rewrite();
  }

  /** Previous boots whose kills the ledger holds. */
  otherBoots(): string[] {
    return [...this.others.keys()];
  }

  /**
   * Writes the file anew from itself, streaming: one line per kill held in memory (the first line of
   * each), nothing of boots no longer kept or of kills dropped at the cap.
   */
  private rewrite(): void {
    const tmp = `${this.file}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o600);
    fs.fchmodSync(fd, 0o600); // a stale tmp keeps its old mode
    try {
      const written = new Map<KillTable, Uint8Array>();
      let out: string[] = [];
      let size = 0;
      forEachLine(this.file, (line) => {
        const e = parseEntry(line);
        if (!e) return;
        const t = this.tableOf(e.b);
        const row = t ? t.findId(idHash(e.e)) : -1;
        if (!t || row < 0) return;
        let w = written.get(t);
        if (!w) written.set(t, (w = new Uint8Array(t.n)));
        if (w[row]) return;
        w[row] = 1;
        out.push(line + '\n');
        size += line.length + 1;
        if (size >= READ_CHUNK) {
          fs.writeSync(fd, out.join(''));
          out = [];
          size = 0;
        }
      });
      if (out.length) fs.writeSync(fd, out.join(''));
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
  }

  private tableOf(bootId: string): KillTable | undefined {
    return bootId === this.bootId ? this.table : this.others.get(bootId);
  }

  /** Kills recorded this boot (those dropped at the cap included). */
  get count(): number {
    return this.table.n + (this.state.evicted?.n ?? 0);
  }

  has(eventId: string): boolean {
    const h = idHash(eventId);
    if (this.table.findId(h) >= 0) return true;
    for (const t of this.others.values()) if (t.findId(h) >= 0) return true;
    return false;
  }

  private since: { us: number; n: number } | null = null;

  /** Kills recorded this boot at or after `sinceUs` (printk clock); counted once per threshold, then kept up to date. */
  countSince(sinceUs: number): number {
    if (this.since?.us !== sinceUs) {
      let n = 0;
      const { t } = this.table;
      for (let i = 0; i < this.table.n; i++) if (t[i] >= sinceUs) n++;
      this.since = { us: sinceUs, n };
    }
    // kills dropped at the cap: counted whole when any of them is this recent (they are the boot's oldest)
    const ev = this.state.evicted;
    return this.since.n + (ev && ev.max_us >= sinceUs ? ev.n : 0);
  }

  /**
   * Records a kill (idempotent per event_id); `bootId` other than this boot's: a previous boot's kill.
   * `key`: `killKeyOfLine`/`killKeyOfRecord`, what matching the kernel log against it uses.
   */
  add(pid: number, tUs: number, eventId: string, cgroup = '', bootId = this.bootId, key: number | null = null): void {
    if (this.has(eventId)) return;
    const e: LedgerEntry = { b: bootId, p: pid, t: Math.round(tUs), e: eventId, ...(cgroup ? { c: cgroup } : {}), ...(key ? { k: key } : {}) };
    // known in memory first: the audit of this run counts the kill even when the disk refuses the line
    this.remember(e);
    this.unwritten.push(JSON.stringify(e) + '\n');
    if (this.unwritten.length > MAX_UNWRITTEN) this.unwritten.shift();
    // lines the disk refused before (full, read-only) go first, in order, with this one;
    // a failed append may have left part of a line: start on a fresh line (readers skip blank and torn ones)
    const text = (this.unwrittenFailed ? '\n' : '') + this.unwritten.join('');
    this.unwrittenFailed = true;
    fs.appendFileSync(this.file, text, { mode: 0o600 });
    this.unwrittenFailed = false;
    this.unwritten.length = 0;
    if (this.evictPending) {
      this.evictPending = false;
      this.rewrite();
    }
  }

  private unwrittenFailed = false;
  private evictPending = false;

  /** Lines not yet on disk (the append failed), written before the next one. */
  private readonly unwritten: string[] = [];

  /** Kills recorded per victim cgroup, each counted from that cgroup's own start time on. */
  countByCgroupSince(since: ReadonlyMap<string, number>): Map<string, number> {
    const byHash = new Map<number, [string, number]>();
    for (const [cg, t] of since) byHash.set(hash53(cg), [cg, t]);
    const out = new Map<string, number>();
    const { t, cg } = this.table;
    for (let i = 0; i < this.table.n; i++) {
      if (cg[i] < 0) continue;
      const s = byHash.get(cg[i]);
      if (s !== undefined && t[i] >= s[1]) out.set(s[0], (out.get(s[0]) ?? 0) + 1);
    }
    return out;
  }

  /** Kills recorded this boot at or after `sinceUs` whose victim cgroup is unknown (a kernel log line without its `oom-kill:` line). */
  countWithoutCgroupSince(sinceUs: number): number {
    let n = 0;
    const { t, cg } = this.table;
    for (let i = 0; i < this.table.n; i++) if (cg[i] < 0 && t[i] >= sinceUs) n++;
    return n;
  }

  /** The victim cgroup of this boot's recorded kill of `pid` logged near `usec` (or with `key`), when recorded with one. */
  cgroupOf(pid: number, usec: number, key: number | null = null): string | undefined {
    const i = this.table.find(pid, usec, key ?? 0);
    if (i < 0 || this.table.cg[i] < 0) return undefined;
    const h = this.table.cg[i];
    return this.cgNames.get(h) ?? this.cgNamesOld.get(h);
  }

  /**
   * Whether a kill of `pid` logged at `usec` (in boot `bootId`) was already recorded (live capture or
   * an earlier backfill): the same key (`killKeyOfLine`), else — for kills recorded without one — the
   * same pid within ±10 s.
   */
  matches(pid: number, usec: number, bootId = this.bootId, key: number | null = null): boolean {
    const t = this.tableOf(bootId);
    return t !== undefined && t.find(pid, usec, key ?? 0) >= 0;
  }

  saveState(): void {
    const tmp = `${this.stateFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(this.state), { mode: 0o600 });
    fs.chmodSync(tmp, 0o600); // a stale tmp keeps its old mode
    fs.renameSync(tmp, this.stateFile);
  }

  /** Into memory; false when the kill was there already. */
  private remember(e: LedgerEntry): boolean {
    let t = this.tableOf(e.b);
    if (!t) this.others.set(e.b, (t = new KillTable()));
    const c = typeof e.c === 'string' && e.c ? e.c : null;
    return this.rememberRow(t, e.b === this.bootId, e.t, idHash(e.e), c === null ? -1 : hash53(c), c, e.p, typeof e.k === 'number' ? e.k | 0 : 0);
  }

  private rememberRow(t: KillTable, current: boolean, tUs: number, eh: number, cg: number, cgName: string | null, pid: number, key: number): boolean {
    if (t.findId(eh) >= 0) return false;
    if (current && cgName !== null) this.nameCgroup(cg, cgName);
    if (t.n >= this.maxPerBoot) this.evict(t, current ? this.bootId : '');
    t.push(tUs, eh, cg, pid, key);
    if (current && this.since && tUs >= this.since.us) this.since.n++;
    return true;
  }

  private nameCgroup(cg: number, cgName: string): void {
    {
      this.cgNames.set(cg, cgName);
      if (this.cgNames.size >= MAX_CGROUP_NAMES / 2) {
        this.cgNamesOld = this.cgNames;
        this.cgNames = new Map();
      }
    }
  }

  /** While opening: the newest lines' cgroup names, kept as (line, offsets) and named at the end (no substring, no map entry per line). */
  private recent: { line: string[]; from: Int32Array; end: Int32Array; hash: Float64Array; n: number } | null = null;

  /**
   * A line of this boot as `add` writes it (`…,"p":N,"t":N,"e":"…"[,"c":"…"][,"k":N]}` after `from`),
   * read in place: no object, no substring but the cgroup name. True: remembered; false: a kill there
   * already; null: not in that form (escapes, torn) — left to the full parser.
   */
  private loadOwnLine(line: string, from: number): boolean | null {
    const last = line.length - 1;
    if (line.charCodeAt(last) !== 125) return null;
    const pEnd = line.indexOf(',', from);
    if (pEnd < 0 || !line.startsWith(',"t":', pEnd)) return null;
    const tEnd = line.indexOf(',', pEnd + 5);
    if (tEnd < 0 || !line.startsWith(',"e":"', tEnd)) return null;
    const eEnd = line.indexOf('"', tEnd + 6);
    // event ids are 32 hex digits (deriveEventId): no escape inside
    if (eEnd - (tEnd + 6) !== 32) return null;
    let at = eEnd + 1;
    let cg = -1;
    let cgName: string | null = null;
    if (line.startsWith(',"c":"', at)) {
      const cEnd = line.indexOf('"', at + 6);
      const bs = line.indexOf('\\', at + 6);
      // a backslash before the closing quote: an escape, the full parser's work
      if (cEnd < 0 || (bs >= 0 && bs < cEnd)) return null;
      cg = hash53(line, at + 6, cEnd);
      const r = this.recent!;
      const slot = r.n++ % RECENT_NAMES;
      r.line[slot] = line;
      r.from[slot] = at + 6;
      r.end[slot] = cEnd;
      r.hash[slot] = cg;
      at = cEnd + 1;
    }
    let key = 0;
    if (line.startsWith(',"k":', at)) {
      key = intAt(line, at + 5, last);
      at = last;
    }
    const pid = intAt(line, from, pEnd);
    const tUs = intAt(line, pEnd + 5, tEnd);
    if (at !== last || Number.isNaN(pid) || Number.isNaN(tUs) || Number.isNaN(key)) return null;
    return this.rememberRow(this.table, true, tUs, idHash(line, tEnd + 6, eEnd), cg, cgName, pid, key | 0);
  }

  /** The cap reached: the oldest half of the boot's kills go (counted in the state for this boot). */
  private evict(t: KillTable, bootId: string): void {
    const from = Math.floor(t.n / 2);
    if (bootId === this.bootId) {
      let min = this.state.evicted?.min_us ?? Infinity;
      let max = this.state.evicted?.max_us ?? -Infinity;
      for (let i = 0; i < from; i++) {
        min = Math.min(min, t.t[i]);
        max = Math.max(max, t.t[i]);
      }
      this.state.evicted = { n: (this.state.evicted?.n ?? 0) + from, min_us: min, max_us: max };
      this.since = null;
      try {
        this.saveState();
      } catch {
        /* the count is in memory; saved with the next state */
      }
    }
    t.dropOldest(from);
    this.evictedAtOpen = true;
    this.evictPending = true;
  }
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
  /** kills this state dir's ledger holds for this boot (evicted ones included) */
  recorded_here: number;
  /** of those in the kernel log, how many this state dir has not recorded (what a backfill here would record) */
  in_log_not_here: number | null;
}

/** The account for `dir` (read only: nothing is created), given the kills the kernel log holds (with their key). */
export function accountKills(dir: string, bootId: string, kernel: number | null, logKills: ReadonlyArray<{ pid: number; usec: number; key?: number }> | null): KillAccount {
  const t = new KillTable();
  let evicted = 0;
  try {
    forEachLine(path.join(dir, LEDGER_FILE), (line) => {
      const e = parseEntry(line);
      if (!e || e.b !== bootId) return;
      const eh = idHash(e.e);
      if (t.findId(eh) < 0) t.push(e.t, eh, -1, e.p, typeof e.k === 'number' ? e.k | 0 : 0);
    });
    const s = readLedgerState(path.join(dir, LEDGER_STATE_FILE));
    if (s?.boot_id === bootId) evicted = s.evicted?.n ?? 0;
  } catch {
    /* unreadable: nothing recorded that we can see */
  }
  const inLog = logKills ? logKills.length : null;
  return {
    kernel,
    in_kernel_log: inLog,
    gone_from_log: kernel !== null && inLog !== null ? Math.max(0, kernel - inLog) : null,
    recorded_here: t.n + evicted,
    in_log_not_here: logKills ? logKills.filter((k) => t.find(k.pid, k.usec, k.key ?? 0) < 0).length : null,
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
export function noteKill(ledger: KillLedger, logger: Logger, pid: number, tUs: number, eventId: string, cgroup = '', key: number | null = null): void {
  try {
    ledger.add(pid, tUs, eventId, cgroup, ledger.bootId, key);
  } catch (err) {
    logger.warn(`kill ledger: cannot record pid ${pid}: ${(err as Error).message}`);
  }
}
