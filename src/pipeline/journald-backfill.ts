import { setTimeout as sleep } from 'node:timers/promises';
import { killsFromKmsg } from '../collectors/kmsg/kmsg';
import { JournaldError, listBoots, readKernelOomLines, type JournalBoot, type JournalctlOptions } from '../collectors/kmsg/journald';
import type { Logger } from '../observe/logger';
import type { OomRecord } from '../record/record';
import type { HostFacts } from '../host/facts';
import { enrichKmsg } from './assemble/enrich';
import { killKeyOfLine, type KillLedger } from './ledger';

/** One journalctl run at most this long at first; the backfill never holds the start, and its stop signal ends it. */
const JOURNALCTL_TIMEOUT_MS = 15_000;
/**
 * A journalctl that ran out of time is run again this many times, with twice the time each (15 s up to 120 s): on a
 * loaded host right after boot `--list-boots` took longer than 15 s, and the previous boot's kills then waited for
 * the agent's next start. Only where a stop signal can cut the waits short (the start-up pass); the live recovery
 * reads the journal again at each of its rounds anyway.
 */
const JOURNALCTL_RETRIES = 3;
const RETRY_PAUSE_MS = 5_000;
/** Lines read per boot per start (about 3 per kill); the cursor carries on from there at the next start. */
const MAX_LINES_PER_BOOT = 200_000;

export interface JournaldBackfillOptions {
  /** a journal directory; '' = the system journal (journalctl's default) */
  directory: string;
  /** how many boots before this one to read (0 = this boot only) */
  previousBoots: number;
  /** journalctl binary; tests only */
  binary?: string;
}

export interface JournaldBackfillParts {
  options: JournaldBackfillOptions;
  logger: Logger;
  ledger: KillLedger;
  facts: HostFacts;
  /** this boot: kills logged from this printk time on are left to the ring backfill and live capture */
  beforeAttachUs: number;
  /** this boot's printk clock → wall clock (the ring backfill's, so both give a kill the same time) */
  toRealtime: (printkNs: bigint) => bigint;
  /** routes one record (metrics, sinks); the ledger entry is made here after it returns */
  emit: (record: OomRecord) => Promise<void>;
  /** ends a journalctl run and the pause before a retry; without it a timed-out run is not retried */
  signal?: AbortSignal;
  /** tests only: the first run's time limit and the pause before a retry */
  timing?: { timeoutMs: number; pauseMs: number };
}

/** `read` with journalctl's time limit, run again with twice the limit after a timeout (see JOURNALCTL_RETRIES). */
async function patiently<T>(p: JournaldBackfillParts, ctl: JournalctlOptions, what: string, read: (ctl: JournalctlOptions) => Promise<T>): Promise<T> {
  let timeoutMs = ctl.timeoutMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await read({ ...ctl, timeoutMs });
    } catch (err) {
      if ((err as JournaldError).code !== 'JOURNALCTL_TIMEOUT' || attempt >= JOURNALCTL_RETRIES || !p.signal) throw err;
      p.logger.warn(`backfill: ${what}: ${(err as Error).message}; trying again in ${((p.timing?.pauseMs ?? RETRY_PAUSE_MS) / 1000).toFixed(0)} s with ${timeoutMs * 2} ms`);
      try {
        await sleep(p.timing?.pauseMs ?? RETRY_PAUSE_MS, undefined, { signal: p.signal });
      } catch {
        throw new JournaldError('JOURNALCTL_ABORTED', 'stopped', true);
      }
      timeoutMs *= 2;
    }
  }
}

/**
 * Records the kills systemd-journald holds that this host never recorded: this boot's that the printk
 * ring has lost, and those of up to `previousBoots` earlier boots (with that boot's id). Each kill's
 * `event_id` is the one the ring backfill derives (boot id, kernel time, pid), so a kill in both the
 * ring and the journal, or captured live and in the journal, is recorded once. Never throws: without
 * journalctl or a journal it logs once and returns 0.
 */
export async function backfillFromJournald(p: JournaldBackfillParts): Promise<number> {
  const { logger, ledger, options } = p;
  const ctl: JournalctlOptions = { directory: options.directory, timeoutMs: p.timing?.timeoutMs ?? JOURNALCTL_TIMEOUT_MS, binary: options.binary, signal: p.signal };
  const where = options.directory ? `journal ${options.directory}` : 'the system journal';
  let boots: JournalBoot[];
  try {
    boots = await patiently(p, ctl, `listing the boots of ${where}`, listBoots);
  } catch (err) {
    const e = err as JournaldError;
    if (e.code === 'JOURNALCTL_ABORTED') return 0;
    if (e.code === 'JOURNALCTL_MISSING' || e.code === 'JOURNAL_EMPTY') logger.info(`backfill: no systemd journal to read (${e.message}); the kernel log ring only`);
    else logger.warn(`backfill: cannot read ${where}: ${e.message}`);
    return 0;
  }
  const current = p.facts.bootId;
  const previous = options.previousBoots > 0 ? boots.filter((b) => b.bootId !== current).slice(-options.previousBoots) : [];
  // the ledger keeps exactly the previous boots still read: their kills must not come back
  ledger.retainBoots(previous.map((b) => b.bootId));
  const todo = [...previous.map((b) => b.bootId), ...(boots.some((b) => b.bootId === current) ? [current] : [])];
  if (todo.length === 0) {
    logger.info(`backfill: ${where} holds no kernel log of this boot${options.previousBoots > 0 ? ' or the previous ones' : ''}`);
    return 0;
  }
  let n = 0;
  for (const bootId of todo) {
    try {
      n += await backfillBoot(p, ctl, bootId);
    } catch (err) {
      const e = err as JournaldError;
      if (e.code === 'JOURNALCTL_ABORTED') break;
      logger.warn(`backfill: cannot read boot ${bootId} from ${where}: ${e.message}`);
    }
  }
  try {
    ledger.saveState();
  } catch (err) {
    logger.warn(`backfill: cannot save progress: ${(err as Error).message}`);
  }
  return n;
}

async function backfillBoot(p: JournaldBackfillParts, ctl: JournalctlOptions, bootId: string): Promise<number> {
  const { ledger, facts, logger } = p;
  const isCurrent = bootId === facts.bootId;
  const progress = (ledger.state.journald ??= {});
  const before = progress[bootId];
  const read = await patiently(p, ctl, `reading boot ${bootId}`, (c) => readKernelOomLines(bootId, { ...c, afterCursor: before?.cursor ?? null, maxLines: MAX_LINES_PER_BOOT }));
  const kernel = read.kernelRelease ?? before?.kernel ?? null;
  const kills = killsFromKmsg(read.records);
  // a previous boot: its own clocks, and what its log says of it; unknown is left empty, never taken from this boot
  const bootFacts: HostFacts = isCurrent ? facts : { ...facts, bootId, kernelRelease: kernel ?? '', cgroupVersion: null };
  let n = 0;
  for (const kill of kills) {
    if (p.signal?.aborted) break;
    // this boot from the attach on: live capture and the ring backfill (with its settle pass) own these
    if (isCurrent && kill.usec >= p.beforeAttachUs) continue;
    const key = killKeyOfLine(kill.killed);
    if (ledger.matches(kill.killed.pid, kill.usec, bootId, key)) continue;
    const line = read.records[kill.seq];
    // the line's wall time: journald's receive time less its lag behind the kernel (both CLOCK_MONOTONIC-like)
    const toRealtime = isCurrent ? p.toRealtime : () => BigInt(line.realtimeUs - (line.monotonicUs - kill.usec)) * 1000n;
    const record = enrichKmsg(kill, bootFacts, toRealtime);
    if (ledger.has(record.event_id)) continue;
    logger.info(
      `backfilled OOM kill of pid ${record.victim_pid} (${record.victim_comm}) from the systemd journal${isCurrent ? '' : ` (previous boot ${bootId})`}`,
      { event_id: record.event_id },
    );
    await p.emit(record);
    try {
      ledger.add(kill.killed.pid, kill.usec, record.event_id, record.victim_cgroup, bootId, key);
    } catch (err) {
      logger.warn(`kill ledger: cannot record pid ${kill.killed.pid}: ${(err as Error).message}`);
    }
    n++;
  }
  // carry on after the last line examined; after a cut-off run, after the last kill line (a report's
  // context lines after it are read again next time)
  const lastKill = kills.length > 0 ? read.records[kills[kills.length - 1].seq] : null;
  const last = read.truncated ? lastKill : read.records[read.records.length - 1];
  if (last && !p.signal?.aborted) progress[bootId] = { cursor: last.cursor, kernel };
  else if (kernel && before) progress[bootId] = { ...before, kernel };
  if (read.truncated) logger.warn(`backfill: boot ${bootId} has more than ${MAX_LINES_PER_BOOT} OOM lines in the journal; the rest is read at the next start`);
  if (n > 0) logger.warn(`backfill: recorded ${n} OOM kill(s) from the systemd journal${isCurrent ? '' : ` of previous boot ${bootId}`} not in this state dir`);
  return n;
}
