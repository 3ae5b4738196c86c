/*
 * Stand-ins for the agent's unit tests (no BPF, no server): a decoded kill event, a collector whose events the
 * test emits, and a sink that keeps what it is given.
 */
import type { Collector } from '../../src/collectors/collector';
import type { RawOomEvent } from '../../src/collectors/oomkill/event';
import type { OomRecord } from '../../src/record/record';
import type { Sink } from '../../src/sinks/sink';

/** A memcg kill of `pid` (comm hog, cgroup /lim/w under the OOM cgroup /lim) as the fentry hook decodes it. */
export function rawEvent(pid: number, bootNs = 5_000_000_000n): RawOomEvent {
  return {
    bootNs,
    totalVmPages: 10,
    anonRssPages: 5,
    fileRssPages: 0,
    shmemRssPages: 0,
    pgtablesBytes: 4096,
    gfpMask: 0xcc0,
    order: 0,
    domainPages: 100,
    memcgLimitPages: 100,
    memcgUsagePages: 100,
    victimPid: pid,
    victimTid: pid,
    victimUid: 0,
    triggerPid: pid,
    triggerTid: pid,
    oomScoreAdj: 0,
    hook: 'fentry',
    constraint: 'memcg',
    constraintInferred: false,
    victimComm: 'hog',
    triggerComm: 'hog',
    victimCgroup: { id: 1n, path: '/lim/w', truncated: false },
    oomCgroup: { id: 2n, path: '/lim', truncated: false },
  };
}

/** A collector that emits what the test hands `emit` (once the agent has started it). */
export function standInCollector(): { collector: Collector<RawOomEvent>; emit: (ev: RawOomEvent) => Promise<void> } {
  const hooks: { emit?: (ev: RawOomEvent) => Promise<void> } = {};
  return {
    collector: {
      name: 'stand-in',
      start: async (e) => {
        hooks.emit = e;
      },
      stop: async () => undefined,
      describe: () => ({ name: 'stand-in', hook: 'fentry', programs: [], unavailable: [] }),
      lostEvents: () => 0n,
    },
    emit: (ev) => hooks.emit!(ev),
  };
}

/** A sink that takes every batch into `got`. */
export const memorySink = (name: string, got: OomRecord[], batchMaxAgeMs = 0): Sink => ({
  name,
  batchMaxAgeMs,
  write: async (batch) => {
    got.push(...batch);
    return { status: 'delivered' };
  },
  flush: async () => undefined,
  close: async () => undefined,
  healthcheck: async () => ({ healthy: true }),
});
