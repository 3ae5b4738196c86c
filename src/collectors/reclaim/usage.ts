import fs from 'node:fs';
import type { BpfObject } from '../../bpf/object';

/** The iterator program in bpf/reclaim.bpf.c and its maps. */
export const MEMCG_USAGE_PROGRAM = 'memcg_usage';
/** USAGE_SLOTS in bpf/reclaim.bpf.c */
const SLOTS = 16384;
/** struct oomtrail_memcg_usage (bpf/reclaim.h): usage_pages, visits (u64 each) = 4 u32 words. */
const WORDS = 4;
const BPF_CGROUP_ITER_DESCENDANTS_PRE = 2;

/**
 * The usage of every sampled memory cgroup from one pass of the `memcg_usage` cgroup iterator: an
 * iterator created, read and closed per trail step, the values then read in place from the mapped
 * `usage_slots` array — instead of a pread of each cgroup's memory.current / memory.usage_in_bytes
 * (the same page counter). Cgroups are keyed by kernfs id, the inode number of their directory; each
 * gets a slot. A cgroup the last pass did not visit (removed) has no usage: the caller reads its file
 * and learns it is gone.
 */
export class MemcgUsagePass {
  private readonly slotOf = new Map<number, number>();
  private readonly free: number[] = [];
  private nextSlot = 0;
  /** visits of each slot as of the previous pass */
  private readonly seen = new Float64Array(SLOTS);
  /** visits moved in the last pass */
  private readonly fresh = new Uint8Array(SLOTS);
  private readonly words: Uint32Array;
  private readonly scratch = Buffer.alloc(64);
  private readonly key = Buffer.alloc(8);
  private readonly slotBuf = Buffer.alloc(4);
  private closed = false;

  private constructor(
    private readonly obj: BpfObject,
    private readonly linkFd: number,
    private readonly pageSize: number,
  ) {
    this.words = new Uint32Array(obj.mapMemory('usage_slots', SLOTS * WORDS * 4));
  }

  /** Attaches the iterator below `root` (the memory hierarchy's root directory, v1 or v2). Throws if the kernel refuses. */
  static attach(obj: BpfObject, root: string, pageSize: number): MemcgUsagePass {
    const fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      // union bpf_iter_link_info.cgroup: { __u32 order; __u32 cgroup_fd; __u64 cgroup_id; }
      const info = Buffer.alloc(16);
      info.writeUInt32LE(BPF_CGROUP_ITER_DESCENDANTS_PRE, 0);
      info.writeUInt32LE(fd, 4);
      return new MemcgUsagePass(obj, obj.attachIter(MEMCG_USAGE_PROGRAM, info), pageSize);
    } finally {
      fs.closeSync(fd); // the link holds its own reference to the cgroup
    }
  }

  /** From the next pass on, reads the cgroup with kernfs id `id`; false (its file is read) when every slot is taken or the map refuses it. */
  track(id: bigint): boolean {
    const n = Number(id);
    if (this.closed) return false;
    if (this.slotOf.has(n)) return true;
    const slot = this.free.pop() ?? (this.nextSlot < SLOTS ? this.nextSlot++ : -1);
    if (slot < 0) return false;
    this.seen[slot] = this.visits(slot);
    this.fresh[slot] = 0;
    this.key.writeBigUInt64LE(id);
    this.slotBuf.writeUInt32LE(slot);
    try {
      this.obj.update('slot_by_cg', this.key, this.slotBuf);
    } catch {
      this.free.push(slot);
      return false;
    }
    this.slotOf.set(n, slot);
    return true;
  }

  untrack(id: bigint): void {
    const n = Number(id);
    const slot = this.slotOf.get(n);
    if (slot === undefined || this.closed) return;
    this.key.writeBigUInt64LE(id);
    this.obj.deleteKey('slot_by_cg', this.key);
    this.slotOf.delete(n);
    this.fresh[slot] = 0;
    this.free.push(slot);
  }

  /** Runs the iterator once; `usage()` then answers for this pass. */
  refresh(): void {
    if (this.closed) throw new Error('reclaim collector stopped');
    if (this.slotOf.size === 0) return;
    this.obj.runIter(this.linkFd, this.scratch);
    for (const slot of this.slotOf.values()) {
      const v = this.visits(slot);
      this.fresh[slot] = v !== this.seen[slot] ? 1 : 0;
      this.seen[slot] = v;
    }
  }

  /** Usage in bytes at the last pass; undefined when that pass did not visit the cgroup. */
  usage(id: number): number | undefined {
    const slot = this.slotOf.get(id);
    if (slot === undefined || !this.fresh[slot]) return undefined;
    const w = slot * WORDS;
    return (this.words[w] + this.words[w + 1] * 2 ** 32) * this.pageSize;
  }

  /** The mapping goes with the object: never read it after. */
  close(): void {
    this.closed = true;
    this.fresh.fill(0);
  }

  private visits(slot: number): number {
    const w = slot * WORDS + 2;
    return this.words[w] + this.words[w + 1] * 2 ** 32;
  }
}
