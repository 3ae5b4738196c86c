import fs from 'node:fs';
import { OomReportParser, type OomReport } from './report';
import { parseConstraint, parseDumpStackHead, parseInvoked, parseKilled, type KernelConstraintReport, type KernelInvokedReport, type KernelKillReport, type KmsgRecord } from './lines';

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

/** Parses one read() of /dev/kmsg: `prio,seq,usec,flags[,…];message\n[ KEY=value\n]*`. */
export function parseKmsgLine(raw: string): KmsgRecord | null {
  const semi = raw.indexOf(';');
  if (semi < 0) return null;
  const [, seq, usec] = raw.slice(0, semi).split(',');
  if (!/^\d+$/.test(seq ?? '') || !/^\d+$/.test(usec ?? '')) return null;
  const message = raw.slice(semi + 1).split('\n')[0];
  return { seq: Number(seq), usec: Number(usec), message: unescapeKmsg(message) };
}

/**
 * Reads /dev/kmsg without blocking, from the oldest record the ring still holds on; each `read()`
 * returns what was logged since the last. Records overwritten before they were read are skipped
 * (EPIPE), as the kernel reports them.
 */
export class KmsgFollower {
  private fd: number | null;
  private readonly buf = Buffer.alloc(16384);

  constructor(device = '/dev/kmsg') {
    this.fd = fs.openSync(device, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  }

  read(): KmsgRecord[] {
    const out: KmsgRecord[] = [];
    for (let n = this.next(); n !== null; n = this.next()) {
      // latin1 keeps every byte; the kernel escaped everything outside printable ASCII anyway
      const r = parseKmsgLine(this.buf.toString('latin1', 0, n));
      if (r) out.push(r);
    }
    return out;
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
      }
    }
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

/** Every record the kernel's printk ring still holds, oldest first. */
export function readKmsgRing(device = '/dev/kmsg'): KmsgRecord[] {
  const f = new KmsgFollower(device);
  try {
    return f.read();
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
  let constraint: KernelConstraintReport | null = null;
  let invokedForConstraint: KernelInvokedReport | null = null;
  const dedup = new KillLineDeduper();
  const reports = new OomReportParser();
  for (const r of records) {
    reports.feed([r]);
    const inv = parseInvoked(r.message);
    if (inv) {
      invoked = inv;
      continue;
    }
    if (invoked && invoked.pid == null) {
      const head = parseDumpStackHead(r.message);
      if (head && head.comm === invoked.comm) {
        invoked = { ...invoked, pid: head.pid };
        continue;
      }
    }
    const c = parseConstraint(r.message);
    if (c) {
      constraint = c;
      invokedForConstraint = invoked;
      invoked = null;
      continue;
    }
    const k = parseKilled(r.message);
    if (!k) continue;
    if (dedup.isRepeat(k.pid, r.usec)) continue;
    const mine = constraint && constraint.pid === k.pid ? constraint : null;
    const report = mine ? reports.find(k.pid) : null;
    out.push({ seq: r.seq, usec: r.usec, killed: k, constraint: mine, invoked: mine ? invokedForConstraint : null, ...(report ? { report } : {}) });
    constraint = null;
    invokedForConstraint = null;
  }
  return out;
}
