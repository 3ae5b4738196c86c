import { SWEEP_GAP_NS, sweepKey, type RawOomEvent } from '../../collectors/oomkill/event';
import type { KmsgKill } from '../../collectors/kmsg/kmsg';
import type { VictimDeath } from '../../collectors/reclaim/collector';
import type { PressureEvent, TrailSource } from '../../collectors/trail/sampler';
import type { Clock } from '../../host/clock';
import type { HostFacts } from '../../host/facts';
import type { OomRecord } from '../../record/record';
import { DEFAULT_EXPLAIN, enrich, enrichKmsg, enrichPressure, type ExplainOptions } from './enrich';

/** Where an OOM victim's death is confirmed (the reclaim collector's victim map). */
export interface DeathSource {
  readonly running: boolean;
  /** false: the kernel lacks what confirms deaths; records then carry no latency fields */
  readonly confirmsDeaths: boolean;
  confirmDeath(tid: number, markBootNs: bigint, maxWaitMs: number, nowBootNs: () => bigint): Promise<VictimDeath | null>;
}

/** What the death wait found: whether deaths can be confirmed here at all, and the death (null: none in time). */
export interface DeathOutcome {
  confirms: boolean;
  death: VictimDeath | null;
}

export interface AssemblyParts {
  facts: HostFacts;
  clock: Clock;
  /** per-cgroup trails; null: trail disabled */
  trail?: TrailSource | null;
  deaths?: DeathSource | null;
  /** longest wait after a kill for the victim's exit before its record goes out */
  deathWaitMs?: number;
  runtime?: RuntimeNames | null;
  /** candidates kept per record, and the host's RAM + swap (a global OOM's domain) */
  explain?: ExplainOptions;
  /**
   * Reads the kill collector's ring and delivers what it held (to `kill`); resolves with the CLOCK_BOOTTIME before
   * which every kill has been noted. Absent: a sweep is taken as complete once no member arrived for a while.
   */
  flush?: (() => Promise<bigint>) | null;
}

/** Container/pod names from the container runtimes: bounded in time, never fails (unknown stays out). */
export interface RuntimeNames {
  annotate(record: OomRecord): Promise<Partial<OomRecord>>;
}

/**
 * Amends a kill's first record (`enrich`, as the journal holds it) with what is known only later:
 * kill→exit/reaped latencies from the death outcome, and the OOM cgroup's trail up to the kill.
 * Returns a new record; the input is left as it is.
 */
export function amendKill(record: OomRecord, death: DeathOutcome | null, trail: TrailSource | null | undefined): OomRecord {
  const out: OomRecord = { ...record };
  if (death?.confirms) {
    const d = death.death;
    const ms = (ns: bigint | null | undefined) => (d && ns ? Number(ns - d.markNs) / 1e6 : null);
    out.victim_exit_latency_ms = ms(d?.exitNs);
    out.victim_reaped_latency_ms = ms(d?.reapedNs);
  }
  const t = trail?.trailFor(record.oom_cgroup || '/', Date.parse(record.time));
  if (t) out.trail = t;
  return out;
}

/**
 * Decode → enrich → trail → death amend, in one place. Every input is injected (host facts, clock,
 * trail, death source): no libbpf, no root, testable as it stands. The agent only moves what this
 * returns from its queue to the router.
 */
export class RecordAssembler {
  private readonly sweeps = new GroupSweeps();

  constructor(private readonly parts: AssemblyParts) {}

  /** A kill's record right after decode: what is made durable before any wait. */
  kill(ev: RawOomEvent): OomRecord {
    if (ev.oomGroupKill) this.sweeps.note(sweepKey(ev), ev.bootNs, this.parts.clock.bootNowNs());
    return enrich(ev, this.parts.facts, this.parts.clock.bootToRealtimeNs, this.parts.explain ?? DEFAULT_EXPLAIN);
  }

  /** The kill's time on the printk clock (µs), to match it with its kernel log line. */
  killPrintkUs(ev: RawOomEvent): number {
    const { clock } = this.parts;
    return clock.printkNowUs() - Number((clock.bootNowNs() - ev.bootNs) / 1000n);
  }

  /**
   * Waits (at most `deathWaitMs`; not at all with `wait: false`, e.g. while stopping) for the
   * victim's death, then amends `record` (from `kill(ev)`) with it and with the trail.
   */
  async complete(ev: RawOomEvent, record: OomRecord, opts: { wait: boolean } = { wait: true }): Promise<OomRecord> {
    const { deaths, clock, runtime } = this.parts;
    // the runtime lookup (bounded) runs during the death wait, not after it
    const names = runtime ? runtime.annotate(record).catch(() => ({})) : Promise.resolve({});
    let outcome: DeathOutcome | null = null;
    if (deaths?.running) {
      // while stopping, only what the kernel already recorded: no wait
      const death = await deaths.confirmDeath(ev.victimTid, ev.bootNs, opts.wait ? (this.parts.deathWaitMs ?? 1000) : 0, clock.bootNowNs);
      outcome = { confirms: deaths.running && deaths.confirmsDeaths, death };
    }
    const out = amendKill({ ...record, ...(await names) }, outcome, this.parts.trail);
    if (ev.oomGroupKill) {
      // a sweep's members are marked in one kernel call, so they reach us together: once none came for
      // SWEEP_SETTLE_NS every member is counted (each record waits at most SWEEP_MAX_WAIT_NS for that)
      if (opts.wait) await this.sweeps.settled(sweepKey(ev), ev.bootNs, clock.bootNowNs, this.parts.flush ?? null);
      out.oom_group_kill_size = this.sweeps.size(sweepKey(ev), ev.bootNs);
    }
    return out;
  }

  /** A memory_pressure record, with the trail the sampler took at its decision. */
  pressure(ev: PressureEvent): OomRecord {
    const r = enrichPressure(ev, this.parts.facts, this.parts.clock.bootToRealtimeNs);
    if (ev.trail) r.trail = ev.trail;
    return r;
  }

  /** A kill recovered from the kernel log. */
  kmsg(kill: KmsgKill): OomRecord {
    return enrichKmsg(kill, this.parts.facts, this.parts.clock.printkToRealtimeNs, this.parts.explain ?? DEFAULT_EXPLAIN);
  }
}

/** Without a collector to flush: no further member arrived for this long, the sweep is complete in user space. */
const SWEEP_SETTLE_NS = 200_000_000n;
const SWEEP_MAX_WAIT_NS = 2_000_000_000n;
/** With one: a record waits at most this long past its sweep's latest mark (a console slower than SWEEP_GAP_NS a line). */
const SWEEP_FLUSHED_MAX_WAIT_NS = 60_000_000_000n;

const byTime = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0);

/** The kills of recent memory.oom.group sweeps, by triggering thread and OOM cgroup: mark times (boot ns). */
class GroupSweeps {
  private readonly marks = new Map<string, { at: bigint[]; seenNs: bigint }>();

  note(key: string, markNs: bigint, nowNs: bigint): void {
    for (const [k, v] of this.marks) if (nowNs - v.seenNs > 10_000_000_000n && k !== key) this.marks.delete(k);
    const m = this.marks.get(key) ?? { at: [], seenNs: nowNs };
    m.at.push(markNs);
    m.seenNs = nowNs;
    this.marks.set(key, m);
  }

  /** The chain of marks at most SWEEP_GAP_NS apart that `markNs` belongs to: [first, last] indexes in sorted order. */
  private chain(key: string, markNs: bigint): { at: bigint[]; lo: number; hi: number } | null {
    const at = [...(this.marks.get(key)?.at ?? [])].sort(byTime);
    const i = at.indexOf(markNs);
    if (i < 0) return null;
    let lo = i;
    while (lo > 0 && at[lo] - at[lo - 1] <= SWEEP_GAP_NS) lo--;
    let hi = i;
    while (hi < at.length - 1 && at[hi + 1] - at[hi] <= SWEEP_GAP_NS) hi++;
    return { at, lo, hi };
  }

  /** How many marks form the sweep `markNs` belongs to. */
  size(key: string, markNs: bigint): number {
    const c = this.chain(key, markNs);
    return c ? c.hi - c.lo + 1 : 1;
  }

  /**
   * Resolves once the sweep of `markNs` is complete. With `flush`, on the kernel's clock: once the collector's ring
   * was read (and what it held noted) through SWEEP_GAP_NS past the sweep's latest mark, no later mark can join it —
   * however late the members reach user space. Without, once no mark under `key` arrived for SWEEP_SETTLE_NS.
   */
  async settled(key: string, markNs: bigint, nowNs: () => bigint, flush: (() => Promise<bigint>) | null): Promise<void> {
    if (!flush) {
      const until = nowNs() + SWEEP_MAX_WAIT_NS;
      // bounded in rounds too, whatever the clock does
      for (let round = 0; round <= Number(SWEEP_MAX_WAIT_NS / SWEEP_SETTLE_NS); round++) {
        const now = nowNs();
        const quiet = now - (this.marks.get(key)?.seenNs ?? 0n);
        if (quiet >= SWEEP_SETTLE_NS || now >= until) return;
        await new Promise((r) => setTimeout(r, Number((SWEEP_SETTLE_NS - quiet) / 1_000_000n) + 1));
      }
      return;
    }
    for (let round = 0; round < 10_000; round++) {
      const c = this.chain(key, markNs);
      const last = c ? c.at[c.hi] : markNs;
      const through = await flush();
      if (through >= last + SWEEP_GAP_NS || nowNs() - last >= SWEEP_FLUSHED_MAX_WAIT_NS) return;
      const waitMs = Number((last + SWEEP_GAP_NS - through) / 1_000_000n);
      await new Promise((r) => setTimeout(r, Math.min(Math.max(waitMs, 1), 1000) + 1));
    }
  }
}
