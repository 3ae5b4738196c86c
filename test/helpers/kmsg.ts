import fs from 'node:fs';
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

function uptimeUsec(): number {
  return Math.round(Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1e6);
}

/** dump_header() is rate limited (burst 10 per 5 s): wait for a fresh window so the next kill is logged in full. */
export async function waitForOomLogWindow(kmsg: KmsgReader): Promise<void> {
  kmsg.drain();
  if (!kmsg.lastOomUsec) return;
  // the window restarts only once 5 s have passed since it began: wait that long after any OOM
  const wait = kmsg.lastOomUsec + 5_500_000 - uptimeUsec();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait / 1000));
}
