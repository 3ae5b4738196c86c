import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../observe/logger';
import type { PipelineMetrics } from '../observe/metrics';
import { KillLineDeduper, KmsgFollower, parseKilled } from '../collectors/kmsg/kmsg';
import { addKernelLogReader } from '../collectors/kmsg/pump';
import { printkNowUs } from '../host/clock';
import { killKeyOfLine, readVmstatOomKills, type KillLedger } from './ledger';

/**
 * A shortfall only counts once it outlasts the grace period, so looking more often than a quarter of
 * it buys nothing: an idle agent wakes for the audit every 2.5 s at the default 10 s grace, not every
 * second.
 */
function auditIntervalMs(graceMs: number): number {
  return Math.max(1000, Math.min(5000, Math.floor(graceMs / 4)));
}

/** The memory-limited cgroups to audit by their own kill counters (the trail sampler's). */
export interface AuditedCgroups {
  cgroups(): Iterable<{ rel: string; dir: string }>;
  /** changes whenever the set of `cgroups()` does */
  cgroupsVersion(): number;
}

export interface KillAuditParts {
  ledger: KillLedger;
  metrics: PipelineMetrics;
  logger: Logger;
  cgroupVersion: 1 | 2 | null;
  /** a shortfall counts as missed only once it stays unexplained this long */
  graceMs: number;
  cgroups?: AuditedCgroups | null;
}

/**
 * Reconciles the kernel's kill count with what this host recorded, from the first agent start of
 * this boot on. A shortfall counts as missed only once it stays unexplained for the grace period
 * (records in flight, a backfill still running).
 */
export class KillAudit {
  private samples: Array<{ at: number; unexplained: number }> = [];
  private cgroupsSeenVersion = -1;
  private kernelReported: number | null = null;
  private missedReported = 0;
  /** the kernel log, read as it grows, for kills the kernel counted twice (memory.oom.group sweeps) */
  private kmsgFollower: KmsgFollower | null = null;
  private readingLog = false;
  private unpump: (() => void) | null = null;
  private readonly repeats = new KillLineDeduper();
  private repeatedSinceBase = 0;
  /** the repeated lines since the base (newest 4,096), to take them off their cgroup's own counter too */
  private readonly repeatedKills: Array<{ pid: number; usec: number; key?: number }> = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(private readonly parts: KillAuditParts) {}

  /** Sets the baseline (once per boot) and checks periodically (a quarter of the grace, 1–5 s). */
  start(): void {
    const { ledger } = this.parts;
    // the counter and the clock read together: a kill before this instant is in the base and not
    // counted as recorded, one after it is both counted by the kernel and (by its time) recorded
    const startUs = printkNowUs();
    const kernel = readVmstatOomKills();
    if (kernel === null) return;
    if (ledger.state.audit_base_kills === null || ledger.state.audit_base_us === null) {
      ledger.state.audit_base_kills = kernel;
      ledger.state.audit_base_us = startUs;
      try {
        ledger.saveState();
      } catch (err) {
        this.parts.logger.warn(`audit: cannot save its baseline: ${(err as Error).message}`);
      }
    }
    try {
      this.kmsgFollower = new KmsgFollower();
      // read on from long synchronous loops too: a repeated line whose first was overwritten unread is not told apart
      this.unpump = addKernelLogReader(() => this.readLog());
    } catch (err) {
      this.parts.logger.info(`audit: no kernel log (${(err as Error).message}): kills the kernel counts twice (memory.oom.group) cannot be told apart`);
    }
    const tick = () => {
      this.check();
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.timer = null;
        tick();
      }, auditIntervalMs(this.parts.graceMs));
      this.timer.unref();
    };
    tick();
  }

  /** No more periodic checks (`check()` may still be called, e.g. a last one at stop). */
  stopTimer(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  close(): void {
    this.stopTimer();
    this.unpump?.();
    this.unpump = null;
    this.kmsgFollower?.close();
    this.kmsgFollower = null;
  }

  /** A memory cgroup's own OOM kill count: v1 memory.oom_control, v2 memory.events.local (not its descendants'). */
  private cgroupKills(dir: string): number | null {
    const v2 = this.parts.cgroupVersion === 2;
    for (const f of v2 ? ['memory.events.local', 'memory.events'] : ['memory.oom_control']) {
      try {
        const m = /^oom_kill (\d+)$/m.exec(readFileSync(path.join(dir, f), 'utf8'));
        if (m) return Number(m[1]);
      } catch {
        /* gone, or an older kernel without the file */
      }
    }
    return null;
  }

  /** Notes the own kill counter of every memory-limited cgroup the trail sampler found, at first sight this boot. */
  private baseCgroups(): void {
    const trail = this.parts.cgroups;
    const state = this.parts.ledger.state;
    if (!trail) return;
    // every second at 10,000 cgroups: only when the sampler's set changed
    if (trail.cgroupsVersion() === this.cgroupsSeenVersion) return;
    this.cgroupsSeenVersion = trail.cgroupsVersion();
    const base = (state.cg_base ??= {});
    let added = false;
    const seen = new Set<string>();
    for (const { rel, dir } of trail.cgroups()) {
      seen.add(rel);
      if (base[rel]) continue;
      const n = this.cgroupKills(dir);
      if (n === null) continue;
      base[rel] = [n, printkNowUs()];
      added = true;
    }
    if (!added) return;
    // bounded by the cgroups that exist: forget removed ones when adding
    for (const rel of Object.keys(base)) if (!seen.has(rel)) delete base[rel];
    try {
      this.parts.ledger.saveState();
    } catch {
      /* retried with the next new cgroup */
    }
  }

  /** Cgroups whose own counter grew by more than the kills recorded in them since first seen. */
  private cgroupShortfalls(): Array<[string, number]> {
    const trail = this.parts.cgroups;
    const base = this.parts.ledger.state.cg_base;
    if (!trail || !base) return [];
    const counters = [...trail.cgroups()].filter(({ rel }) => base[rel]).map(({ rel, dir }) => ({ rel, kills: this.cgroupKills(dir) }));
    return cgroupShortfalls(this.parts.ledger, counters, this.repeatedKills);
  }

  /** The kernel log's descriptor (readable when it grew), to have `readLog` called as it grows; null without one. */
  logDescriptor(): number | null {
    return this.kmsgFollower?.descriptor ?? null;
  }

  /**
   * Reads the kernel log on for repeated kill lines. Called at each check, and as the log grows where the caller can
   * wait for it: a big sweep's report and lines scroll the printk ring within a second, and a repeated line read
   * after its first was overwritten would not be told apart.
   */
  readLog(): void {
    const base = this.parts.ledger.state.audit_base_us;
    if (base === null || this.readingLog) return;
    this.readingLog = true;
    try {
      for (const r of this.kmsgFollower?.read() ?? []) {
        const k = parseKilled(r.message);
        // a memory.oom.group sweep logs its victim twice, and each line is counted in oom_kill
        if (k && this.repeats.isRepeat(k.pid, r.usec) && r.usec >= base) {
          this.repeatedSinceBase++;
          this.repeatedKills.push({ pid: k.pid, usec: r.usec, key: killKeyOfLine(k) });
          if (this.repeatedKills.length > 4096) this.repeatedKills.shift();
        }
      }
    } catch (err) {
      this.parts.logger.warn(`audit: kernel log unreadable, stop reading it: ${(err as Error).message}`);
      this.kmsgFollower?.close();
      this.kmsgFollower = null;
    } finally {
      this.readingLog = false;
    }
  }

  /** One reconciliation: kernel count vs recorded kills, reported once settled past the grace period. */
  check(): void {
    const { ledger, metrics } = this.parts;
    this.baseCgroups();
    const kernel = readVmstatOomKills();
    if (kernel === null || ledger.state.audit_base_kills === null || ledger.state.audit_base_us === null) return;
    if (this.kernelReported === null) metrics.kernelOomKills.inc({}, kernel);
    else if (kernel > this.kernelReported) metrics.kernelOomKills.inc({}, kernel - this.kernelReported);
    this.kernelReported = kernel;
    // Read the log after the counter: a kill counted is then either logged below or still to come
    // (and explained at a later tick, within the grace).
    this.readLog();
    const unexplained = Math.max(
      0,
      kernel - ledger.state.audit_base_kills - this.repeatedSinceBase - ledger.countSince(ledger.state.audit_base_us),
    );
    const now = Date.now();
    const grace = this.parts.graceMs;
    this.samples.push({ at: now, unexplained });
    // keep the newest sample at least `grace` old and everything after it
    while (this.samples.length > 1 && this.samples[1].at <= now - grace) this.samples.shift();
    if (this.samples[0].at > now - grace) return;
    const settled = Math.min(...this.samples.map((x) => x.unexplained));
    if (settled > this.missedReported) {
      metrics.missedKills.inc({}, settled - this.missedReported);
      const where = this.cgroupShortfalls();
      // a kill recorded from the kernel log whose oom-kill: line was rate-limited counts for no cgroup
      const noCgroup = where.length ? ledger.countWithoutCgroupSince(ledger.state.audit_base_us) : 0;
      this.parts.logger.warn(
        `audit: the kernel counted ${kernel - ledger.state.audit_base_kills} OOM kill(s) since the first agent start of this boot, ` +
          `this state dir recorded ${ledger.countSince(ledger.state.audit_base_us)}: ${settled} missed (not recorded here; an agent with another state dir may hold them)` +
          (where.length ? `; by the cgroups' own counters: ${where.map(([cg, n]) => `${cg} ${n}`).join(', ')}` : '') +
          (noCgroup ? ` (${noCgroup} recorded kill(s) name no cgroup, their oom-kill: line rate-limited: they may be among these)` : ''),
      );
      this.missedReported = settled;
    }
  }
}

/**
 * Per cgroup: its own kill counter's growth since the audit first saw it (`cg_base`), less the kills
 * recorded there since then and the repeated kernel lines of a memory.oom.group sweep (counted twice
 * in the cgroup's counter as in /proc/vmstat). Cgroups without a base or a readable counter are left out.
 */
export function cgroupShortfalls(
  ledger: KillLedger,
  counters: Iterable<{ rel: string; kills: number | null }>,
  repeatedKills: ReadonlyArray<{ pid: number; usec: number; key?: number }>,
): Array<[string, number]> {
  const base = ledger.state.cg_base;
  if (!base) return [];
  const since = new Map(Object.entries(base).map(([rel, [, t]]) => [rel, t]));
  const recorded = ledger.countByCgroupSince(since);
  const repeated = new Map<string, number>();
  for (const { pid, usec, key } of repeatedKills) {
    // by the kill's key: the live capture's time is on a clock that drifts from the log's
    const cg = ledger.cgroupOf(pid, usec, key ?? null);
    if (cg !== undefined && usec >= (since.get(cg) ?? Infinity)) repeated.set(cg, (repeated.get(cg) ?? 0) + 1);
  }
  const out: Array<[string, number]> = [];
  for (const { rel, kills } of counters) {
    const b = base[rel];
    if (!b || kills === null) continue;
    const short = kills - b[0] - (recorded.get(rel) ?? 0) - (repeated.get(rel) ?? 0);
    if (short > 0) out.push([rel, short]);
  }
  return out;
}
