import fs from 'node:fs';
import { pumpKernelLog } from './pump';
import { OomReportParser, type OomReport } from './report';
import {
  constraintReadings,
  looksLikeOomLine,
  parseConstraint,
  parseDumpStackHead,
  parseInvoked,
  parseKilled,
  pickReading,
  rejectKernelLine,
  type KernelConstraintReport,
  type KernelInvokedReport,
  type KernelKillReport,
  type KmsgRecord,
} from './lines';

export { parseConstraint, parseInvoked, parseKilled, type KernelConstraintReport, type KernelInvokedReport, type KernelKillReport, type KmsgRecord };

/*
 * The kernel log (/dev/kmsg) as a second, after-the-fact source of OOM kills: the "Killed process"
 * line is never rate limited, so every kill the ring still holds can be recovered from it.
 */

export function unescapeKmsg(text: string): string {
  if (!text.includes('\\x')) return text;
  const bytes: number[] = [];
  for (let i = 0; i < text.length; ) {
    const m = /^\\x([0-9a-fA-F]{2})/.exec(text.slice(i, i + 4));
    if (m) {
      bytes.push(parseInt(m[1], 16));
      i += 4;
    } else {
      for (const b of Buffer.from(text[i], 'utf8')) bytes.push(b);
      i += 1;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/**
 * Parses one read() of /dev/kmsg: `prio,seq,usec,flags[,…];message\n[ KEY=value\n]*`. `prio` is
 * facility << 3 | level; the kernel's own lines have facility 0, and it gives every line a process
 * writes to /dev/kmsg a non-zero one (LOG_USER unless the writer names another), whatever `<N>` says.
 */
export function parseKmsgLine(raw: string): KmsgRecord | null {
  const semi = raw.indexOf(';');
  if (semi < 0) return null;
  const [prio, seq, usec] = raw.slice(0, semi).split(',');
  if (!/^\d+$/.test(prio ?? '') || !/^\d+$/.test(seq ?? '') || !/^\d+$/.test(usec ?? '')) return null;
  const message = raw.slice(semi + 1).split('\n')[0];
  return { seq: Number(seq), usec: Number(usec), facility: Number(prio) >> 3, message: unescapeKmsg(message) };
}

/**
 * Reads /dev/kmsg without blocking, from the oldest record the ring still holds on; each `read()`
 * returns what was logged since the last. Records overwritten before they were read are skipped
 * (EPIPE), as the kernel reports them.
 */
export class KmsgFollower {
  private fd: number | null;
  private readonly buf = Buffer.alloc(16384);
  /** sequence number of the first record read (kernel's or not), -1 before any: where the ring began */
  firstSeq = -1;
  /** times the kernel overwrote records before this reader got to them (EPIPE) */
  overwritten = 0;

  constructor(device = '/dev/kmsg') {
    this.fd = fs.openSync(device, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  }

  /** The kernel's records logged since the last read; lines written by processes are left out (and counted when they speak of OOM kills). */
  read(): KmsgRecord[] {
    const out: KmsgRecord[] = [];
    for (let n = this.next(); n !== null; n = this.next()) {
      pumpKernelLog();
      // latin1 keeps every byte; the kernel escaped everything outside printable ASCII anyway
      const r = parseKmsgLine(this.buf.toString('latin1', 0, n));
      if (!r) continue;
      if (this.firstSeq < 0) this.firstSeq = r.seq;
      if (r.facility === 0) out.push(r);
      else if (looksLikeOomLine(r.message)) rejectKernelLine('not_kernel', r.message);
    }
    return out;
  }

  /** The open descriptor (to wait on it: readable when the kernel logged something new), or null once closed. */
  get descriptor(): number | null {
    return this.fd;
  }

  /** Moves past every record logged so far without parsing them (read() would build them all). */
  skip(): void {
    while (this.next() !== null);
  }

  /** The next record into buf: its length, or null when none is left (or the follower is closed). */
  private next(): number | null {
    if (this.fd === null) return null;
    for (;;) {
      try {
        return fs.readSync(this.fd, this.buf, 0, this.buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') return null;
        if (code !== 'EPIPE') throw err;
        this.overwritten++;
      }
    }
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

/** Every kernel record the printk ring still holds, oldest first; `firstSeq`: the ring's oldest record of any origin (-1: empty). */
export function readKmsgRing(device = '/dev/kmsg'): KmsgRecord[] & { firstSeq?: number } {
  const f = new KmsgFollower(device);
  try {
    return Object.assign(f.read(), { firstSeq: f.firstSeq });
  } finally {
    f.close();
  }
}

/** One kill as the kernel logged it; `constraint`/`invoked` are null when rate limiting dropped them. */
export interface KmsgKill {
  seq: number;
  usec: number;
  killed: KernelKillReport;
  constraint: KernelConstraintReport | null;
  invoked: KernelInvokedReport | null;
  /** The whole printed report of this kill (memory, Tasks state), when the kernel printed it. */
  report?: OomReport | null;
}

/** A second "Killed process" line for the same pid within this many µs is the same kill. */
const SAME_KILL_US = 5_000_000;

/**
 * Tells a repeated "Killed process" line from a new kill: a memory.oom.group sweep logs (and, on
 * 6.1, counts in oom_kill) its chosen victim twice — once as the victim, once as a group member.
 */
export class KillLineDeduper {
  private readonly lastByPid = new Map<number, number>();

  /** True when this line repeats a kill of the same pid logged just before. */
  isRepeat(pid: number, usec: number): boolean {
    const prev = this.lastByPid.get(pid);
    this.lastByPid.set(pid, usec);
    if (this.lastByPid.size > 4096) this.lastByPid.delete(this.lastByPid.keys().next().value as number);
    return prev !== undefined && usec - prev >= 0 && usec - prev < SAME_KILL_US;
  }
}

/**
 * The kills in `records` (oldest first). The `oom-kill:` line and the `invoked oom-killer` line of
 * the same report precede the kill line; they are attached only when they name the same pid.
 * A memory.oom.group sweep logs its chosen victim twice: the second line is dropped (one kill).
 */
export function killsFromKmsg(records: readonly KmsgRecord[]): KmsgKill[] {
  const out: KmsgKill[] = [];
  let invoked: KernelInvokedReport | null = null;
  let constraint: { readings: KernelConstraintReport[]; invoked: KernelInvokedReport | null } | null = null;
  const dedup = new KillLineDeduper();
  const reports = new OomReportParser(16, false); // refusals are counted here
  for (const r of records) {
    // readers drop what a process wrote to /dev/kmsg; a record that says otherwise is not used either
    if (r.facility !== undefined && r.facility !== 0) continue;
    reports.feed([r]);
    const inv = parseInvoked(r.message);
    if (inv) {
      invoked = inv;
      continue;
    }
    if (invoked && invoked.pid == null) {
      const pid = parseDumpStackHead(r.message, invoked.comm);
      if (pid !== null) {
        invoked = { ...invoked, pid };
        continue;
      }
    }
    if (r.message.startsWith('oom-kill:')) {
      const readings = constraintReadings(r.message);
      if (readings.length === 0) rejectKernelLine('malformed', r.message);
      constraint = readings.length ? { readings, invoked } : null;
      invoked = null;
      continue;
    }
    const k = parseKilled(r.message);
    if (!k) {
      // the kernel prints cgroup names inside its lines: one spelling a kill is refused here
      if (r.message.includes('Killed process')) rejectKernelLine('malformed', r.message);
      continue;
    }
    if (dedup.isRepeat(k.pid, r.usec)) continue;
    let mine: KernelConstraintReport | null = null;
    let report: OomReport | null = null;
    if (constraint && constraint.readings[0].pid === k.pid) {
      // the kill line's comm (read unambiguously) tells the oom-kill: line's comm from a name that spells `,task=`
      mine = pickReading(constraint.readings, { comm: k.comm });
      if (mine) report = reports.find(k.pid, { comm: mine.task, oomMemcg: mine.oomMemcg, taskMemcg: mine.taskMemcg, notBeforeUs: r.usec - SAME_KILL_US, notAfterUs: r.usec });
      else rejectKernelLine('ambiguous', `oom-kill: line of pid ${k.pid} reads ${constraint.readings.length} ways`);
    }
    out.push({ seq: r.seq, usec: r.usec, killed: k, constraint: mine, invoked: mine ? constraint!.invoked : null, ...(report ? { report } : {}) });
    constraint = null;
  }
  return out;
}
