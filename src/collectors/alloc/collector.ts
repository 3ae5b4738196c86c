import fs from 'node:fs';
import { BpfObject } from '../../bpf/object';
import { bpfObjectPath } from '../../bpf/objects';
import { installLibbpfLogger, withLibbpfLog } from '../../bpf/log';
import type { Logger } from '../../observe/logger';
import type { CollectorDescription } from '../collector';

export const ALLOC_OBJECT_PATH = bpfObjectPath('alloc');
export const ALLOC_PROGRAM = 'page_alloc';
/**
 * A raw tracepoint: attached through bpf() alone, no perf_event_open (Debian's perf_event_paranoid=3 refuses that
 * to the packaged unit: EACCES) and no tracepoint id from tracefs.
 */
export const ALLOC_HOOK = 'raw_tp/mm_page_alloc';
/** struct oomtrail_alloc_stat (bpf/alloc.h) */
export const ALLOC_STAT_SIZE = 16;

/** Possible CPUs: the per-CPU map value holds one copy per possible CPU. */
export function possibleCpus(text = fs.readFileSync('/sys/devices/system/cpu/possible', 'utf8')): number {
  let n = 0;
  for (const part of text.trim().split(',')) {
    const [a, b] = part.split('-').map(Number);
    n += b === undefined ? 1 : b - a + 1;
  }
  return n;
}

export interface AllocStat {
  pages: bigint;
  calls: bigint;
}

/** Sums a per-CPU value (each CPU's copy is rounded up to 8 bytes; 16 already is). */
export function sumPerCpu(value: Buffer, cpus: number): AllocStat {
  let pages = 0n;
  let calls = 0n;
  for (let c = 0; c < cpus; c++) {
    pages += value.readBigUInt64LE(c * ALLOC_STAT_SIZE);
    calls += value.readBigUInt64LE(c * ALLOC_STAT_SIZE + 8);
  }
  return { pages, calls };
}

/**
 * The alloc collector: page allocations per memory cgroup, aggregated in a per-CPU kernel map and
 * read (one map walk) per interval. Off by default: see bench/overhead.ts for its measured cost.
 */
export class AllocCollector {
  readonly name = 'alloc';
  private obj: BpfObject | null = null;
  private readonly cpus = possibleCpus();
  /** user-space map walks, and map elements read in them */
  mapReads = 0;
  elementsRead = 0;

  constructor(private readonly opts: { logger: Logger; objectPath?: string }) {}

  start(): void {
    installLibbpfLogger(this.opts.logger);
    const obj = withLibbpfLog(() => BpfObject.open(this.opts.objectPath ?? ALLOC_OBJECT_PATH, [ALLOC_PROGRAM], [ALLOC_PROGRAM]));
    try {
      withLibbpfLog(() => obj.load());
      obj.attach(ALLOC_PROGRAM);
    } catch (err) {
      obj.close();
      throw err;
    }
    this.obj = obj;
    this.opts.logger.info(`alloc: attached ${ALLOC_HOOK}`);
  }

  get running(): boolean {
    return this.obj !== null;
  }

  read(): Map<bigint, AllocStat> {
    const out = new Map<bigint, AllocStat>();
    if (!this.obj) return out;
    this.mapReads++;
    for (const { key, value } of this.obj.readMap('alloc_by_cg', 8, ALLOC_STAT_SIZE * this.cpus)) {
      this.elementsRead++;
      out.set(key.readBigUInt64LE(0), sumPerCpu(value, this.cpus));
    }
    return out;
  }

  stop(): void {
    this.obj?.close();
    this.obj = null;
  }

  describe(): CollectorDescription {
    return { name: this.name, hook: this.obj ? 'raw_tp' : null, programs: this.obj ? [ALLOC_PROGRAM] : [], unavailable: [] };
  }
}
