import fs from 'node:fs';

// the parser lives in src (the agent backfills from the kernel log); the tests use it as their oracle
import { unescapeKmsg, type KmsgRecord } from '../../src/collectors/kmsg/kmsg';
import { parseConstraint, parseInvoked, parseKilled, type KernelConstraintReport, type KernelInvokedReport, type KernelKillReport } from '../../src/collectors/kmsg/kmsg';

export { unescapeKmsg, parseConstraint, parseInvoked, parseKilled };
export type { KmsgRecord, KernelConstraintReport, KernelInvokedReport, KernelKillReport };

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
