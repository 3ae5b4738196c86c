// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * alloc: page allocations per memory cgroup of the allocating task, counted in a per-CPU map (no
 * atomics, no cross-CPU cache-line bouncing) and read by user space once per interval. Nothing is
 * sent per event: kmem/mm_page_alloc fires millions of times a second on a busy host.
 *
 * A raw tracepoint (BPF_RAW_TRACEPOINT_OPEN, Linux >= 4.17), like the reclaim collector's: it attaches
 * through bpf() alone, without perf_event_open, which Debian's perf_event_paranoid=3 refuses to a
 * service without CAP_SYS_ADMIN (the classic tracepoint got EACCES under the packaged unit), and
 * without a tracepoint id from tracefs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "alloc.h"
#include "memcg.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const struct oomtrail_alloc_stat *unused_alloc_stat __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct oomtrail_alloc_stat);
} alloc_by_cg SEC(".maps");

/* (struct page *page, unsigned int order, gfp_t gfp_flags, int migratetype): order is args[1] */
SEC("raw_tp/mm_page_alloc")
int page_alloc(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 cg = current_memcg_id();
	__u32 order = (__u32)ctx->args[1];
	struct oomtrail_alloc_stat *st = bpf_map_lookup_elem(&alloc_by_cg, &cg);

	if (!st) {
		struct oomtrail_alloc_stat fresh = {};

		bpf_map_update_elem(&alloc_by_cg, &cg, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&alloc_by_cg, &cg);
		if (!st)
			return 0;
	}
	/* per-CPU value: this CPU's copy only, no atomics needed */
	st->pages += 1ULL << (order & 31);
	st->calls += 1;
	return 0;
}
