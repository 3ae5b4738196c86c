// the parser lives in src (the agent backfills from the kernel log); the tests use it as their oracle
import { KmsgFollower, unescapeKmsg, type KmsgRecord } from '../../src/collectors/kmsg/kmsg';
import { parseConstraint, parseInvoked, parseKilled, type KernelConstraintReport, type KernelInvokedReport, type KernelKillReport } from '../../src/collectors/kmsg/kmsg';

export { unescapeKmsg, parseConstraint, parseInvoked, parseKilled };
export type { KmsgRecord, KernelConstraintReport, KernelInvokedReport, KernelKillReport };

/** Reads the kernel log without blocking a thread: O_NONBLOCK, polled. The oracle of the e2e tests. */
export class KmsgReader {
  private readonly follower = new KmsgFollower();
  readonly records: KmsgRecord[] = [];
  /** Kernel time of the last OOM line ever read, including those from before this reader. */
  lastOomUsec = 0;

  constructor() {
    this.drain();
    // only what is logged from now on matters
    this.records.length = 0;
  }

  drain(): void {
    for (const r of this.follower.read()) {
      this.records.push(r);
      if (/invoked oom-killer|Killed process/.test(r.message)) this.lastOomUsec = r.usec;
    }
  }

  close(): void {
    this.follower.close();
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
