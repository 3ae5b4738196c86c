import fs from 'node:fs';

/** One /dev/kmsg record, its message unescaped (the kernel writes non-printable bytes as \xNN). */
export interface KmsgRecord {
  seq: number;
  usec: number;
  message: string;
}

export function unescapeKmsg(text: string): string {
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

/** Reads the kernel log without blocking a thread: O_NONBLOCK, polled. The oracle of the e2e tests. */
export class KmsgReader {
  private readonly fd: number;
  readonly records: KmsgRecord[] = [];
  /** Kernel time of the last OOM line ever read, including those from before this reader. */
  lastOomUsec = 0;
  private readonly buf = Buffer.alloc(16384);

  constructor() {
    this.fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    this.drain();
    // only what is logged from now on matters
    this.records.length = 0;
  }

  drain(): void {
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(this.fd, this.buf, 0, this.buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') return;
        if (code === 'EPIPE') continue; // records overwritten before we read them: skip ahead
        throw err;
      }
      const text = this.buf.toString('latin1', 0, n);
      const semi = text.indexOf(';');
      const [, seq, usec] = text.slice(0, semi).split(',');
      const message = text.slice(semi + 1).split('\n')[0];
      this.records.push({ seq: Number(seq), usec: Number(usec), message: unescapeKmsg(message) });
      if (/invoked oom-killer|Killed process/.test(message)) this.lastOomUsec = Number(usec);
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

export interface KernelKillReport {
  pid: number;
  comm: string;
  totalVmKb: number;
  anonRssKb: number;
  fileRssKb: number;
  shmemRssKb: number;
  uid: number;
  pgtablesKb: number;
  oomScoreAdj: number;
  global: boolean;
}

export interface KernelConstraintReport {
  constraint: string;
  oomMemcg: string | null;
  taskMemcg: string;
  task: string;
  pid: number;
  uid: number;
}

export interface KernelInvokedReport {
  comm: string;
  gfpMask: string;
  order: number;
  oomScoreAdj: number;
}

const KILLED = /(Memory cgroup out of memory|Out of memory): Killed process (\d+) \((.*)\) total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB, shmem-rss:(\d+)kB, UID:(\d+) pgtables:(\d+)kB oom_score_adj:(-?\d+)/;
const CONSTRAINT = /^oom-kill:constraint=(\w+),.*?(?:,oom_memcg=(.*)|,global_oom),task_memcg=(.*),task=(.*),pid=(\d+),uid=(\d+)$/;
const INVOKED = /^(.*) invoked oom-killer: gfp_mask=(0x[0-9a-f]+)\(.*\), order=(-?\d+), oom_score_adj=(-?\d+)/;

export function parseKilled(message: string): KernelKillReport | null {
  const m = KILLED.exec(message);
  if (!m) return null;
  return {
    global: m[1] === 'Out of memory',
    pid: Number(m[2]),
    comm: m[3],
    totalVmKb: Number(m[4]),
    anonRssKb: Number(m[5]),
    fileRssKb: Number(m[6]),
    shmemRssKb: Number(m[7]),
    uid: Number(m[8]),
    pgtablesKb: Number(m[9]),
    oomScoreAdj: Number(m[10]),
  };
}

export function parseConstraint(message: string): KernelConstraintReport | null {
  const m = CONSTRAINT.exec(message);
  if (!m) return null;
  return { constraint: m[1], oomMemcg: m[2] ?? null, taskMemcg: m[3], task: m[4], pid: Number(m[5]), uid: Number(m[6]) };
}

export function parseInvoked(message: string): KernelInvokedReport | null {
  const m = INVOKED.exec(message);
  if (!m) return null;
  return { comm: m[1], gfpMask: m[2], order: Number(m[3]), oomScoreAdj: Number(m[4]) };
}

/** Everything the kernel said about one victim pid: the kill line, and (rate limited) its constraint line. */
export function kernelReportFor(records: KmsgRecord[], pid: number) {
  let killed: KernelKillReport | null = null;
  let constraint: KernelConstraintReport | null = null;
  let invoked: KernelInvokedReport | null = null;
  let lastInvoked: KernelInvokedReport | null = null;
  for (const r of records) {
    const inv = parseInvoked(r.message);
    if (inv) lastInvoked = inv;
    const c = parseConstraint(r.message);
    if (c && c.pid === pid) {
      constraint = c;
      invoked = lastInvoked;
    }
    const k = parseKilled(r.message);
    if (k && k.pid === pid) killed = k;
  }
  return { killed, constraint, invoked };
}
