import fs from 'node:fs';
// the parser lives in src (the agent backfills from the kernel log); the tests use it as their oracle
import { KmsgFollower, unescapeKmsg, type KmsgRecord } from '../../src/collectors/kmsg/kmsg';
import { parseConstraint, parseInvoked, parseKilled, type KernelConstraintReport, type KernelInvokedReport, type KernelKillReport } from '../../src/collectors/kmsg/kmsg';
import { OomReportParser } from '../../src/collectors/kmsg/report';

export { unescapeKmsg, parseConstraint, parseInvoked, parseKilled };
export type { KmsgRecord, KernelConstraintReport, KernelInvokedReport, KernelKillReport };

/** Reads the kernel log without blocking a thread: O_NONBLOCK, polled. The oracle of the e2e tests. */
export class KmsgReader {
  private readonly follower = new KmsgFollower();
  readonly records: KmsgRecord[] = [];
  /** Kernel time of the last OOM line ever read, including those from before this reader. */
  lastOomUsec = 0;
  /** Kernel times of the newest "Killed process" lines ever read (oldest first), including those from before this reader. */
  readonly killUsecs: number[] = [];

  constructor() {
    this.drain();
    // only what is logged from now on matters
    this.records.length = 0;
  }

  drain(): void {
    for (const r of this.follower.read()) {
      this.records.push(r);
      if (/invoked oom-killer|Killed process/.test(r.message)) this.lastOomUsec = r.usec;
      if (/Killed process/.test(r.message)) {
        this.killUsecs.push(r.usec);
        if (this.killUsecs.length > 64) this.killUsecs.shift();
      }
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

/**
 * dump_header() is rate limited: oom_kill_process() asks ___ratelimit(&oom_rs) (5 s, burst 10) before printing the
 * report. A window opens at the first call after the previous one closed, so every call counted in the current
 * window is a kill of the last 5 s, and each call prints at least one "Killed process" line (a memory.oom.group sweep
 * prints more, which only makes this count higher). With at most 10 - calls such lines younger than 5 s, the next
 * `calls` kills are printed in full; otherwise wait until enough of them are older. (Was: always 5.5 s after any
 * OOM, ~5 s per single-kill test.) The 0.5 s margin covers jiffies rounding and /proc/uptime against the log clock.
 */
export async function waitForOomLogWindow(kmsg: KmsgReader, calls = 3): Promise<void> {
  kmsg.drain();
  const WINDOW = 5_500_000;
  const now = uptimeUsec();
  const recent = kmsg.killUsecs.filter((t) => t > now - WINDOW);
  const excess = recent.length - (10 - calls);
  if (excess <= 0) return;
  const wait = recent[excess - 1] + WINDOW - now;
  if (wait > 0) await new Promise((r) => setTimeout(r, wait / 1000));
}

/**
 * The kernel's whole reports (for the kills it printed them) and its "Killed process" line of every kill, by pid,
 * from what the reader has drained.
 */
export function kernelKills(records: readonly KmsgRecord[]): { reports: OomReportParser; killed: Map<number, KernelKillReport> } {
  const reports = new OomReportParser(4096);
  reports.feed(records as KmsgRecord[]);
  const killed = new Map<number, KernelKillReport>();
  for (const r of records) {
    const k = parseKilled(r.message);
    if (k) killed.set(k.pid, k);
  }
  return { reports, killed };
}
