/* Shared between bpf/alloc.bpf.c and src/collectors/alloc/collector.ts. */
#ifndef OOMTRAIL_ALLOC_H
#define OOMTRAIL_ALLOC_H

/* Value of the per-CPU map `alloc_by_cg` (key __u64 = memory cgroup kernfs id): user space sums the
 * CPUs' copies. Counters only grow. */
struct oomtrail_alloc_stat {
	__u64 pages;  /* 1 << order per allocation */
	__u64 calls;  /* allocations */
};

#endif
