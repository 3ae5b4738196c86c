// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * reclaim: time stalled in reclaim and pages reclaimed, aggregated in the kernel per memory
 * cgroup (user space reads the map once per interval: never one message per event), and the
 * death of each OOM victim (kill -> exit -> memory reaped).
 *
 * Raw tracepoints only (BPF_RAW_TRACEPOINT_OPEN, Linux >= 4.17): they attach without kprobes or
 * fentry (locked-down hosts), and without perf_event_open, which Debian's perf_event_paranoid=3
 * refuses to a service without CAP_SYS_ADMIN (classic tracepoints got EACCES under the packaged
 * unit). Their arguments are the tracepoints' TP_PROTO, unchanged since 4.x for the ones read here
 * except mark_victim (checked below).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "reclaim.h"
#include "memcg.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const struct oomtrail_reclaim_stat *unused_stat __attribute__((unused));
const struct oomtrail_victim_state *unused_victim __attribute__((unused));
const struct oomtrail_memcg_usage *unused_usage __attribute__((unused));

/* One entry per memory cgroup that ever stalled; LRU so a churn of short-lived cgroups never fills it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct oomtrail_reclaim_stat);
} reclaim_by_cg SEC(".maps");

struct reclaim_start {
	__u64 ns;
	__u64 cg;
};

/* A reclaim pass in progress, per thread (begin/end pairs run on the same thread). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct reclaim_start);
} direct_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct reclaim_start);
} memcg_start SEC(".maps");

/* OOM victims by tid; LRU: user space deletes entries it has reported, old ones age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct oomtrail_victim_state);
} victims SEC(".maps");

/* Reclaim passes seen (all cgroups): proves aggregation (events >> map reads). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} reclaim_events SEC(".maps");

static __always_inline void begin(void *map)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct reclaim_start s = { .ns = bpf_ktime_get_ns(), .cg = current_memcg_id() };

	bpf_map_update_elem(map, &tid, &s, BPF_ANY);
}

static __always_inline void end(void *map, __u64 nr_reclaimed, bool memcg)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct reclaim_start *s = bpf_map_lookup_elem(map, &tid);
	struct oomtrail_reclaim_stat *st;
	__u64 cg, dt;
	__u32 zero = 0;
	__u64 *n;

	if (!s)
		return;
	dt = bpf_ktime_get_ns() - s->ns;
	cg = s->cg;
	bpf_map_delete_elem(map, &tid);

	st = bpf_map_lookup_elem(&reclaim_by_cg, &cg);
	if (!st) {
		struct oomtrail_reclaim_stat fresh = {};

		bpf_map_update_elem(&reclaim_by_cg, &cg, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&reclaim_by_cg, &cg);
		if (!st)
			return;
	}
	if (memcg) {
		__sync_fetch_and_add(&st->memcg_stall_ns, dt);
		__sync_fetch_and_add(&st->memcg_reclaimed, nr_reclaimed);
		__sync_fetch_and_add(&st->memcg_count, 1);
	} else {
		__sync_fetch_and_add(&st->direct_stall_ns, dt);
		__sync_fetch_and_add(&st->direct_reclaimed, nr_reclaimed);
		__sync_fetch_and_add(&st->direct_count, 1);
	}
	n = bpf_map_lookup_elem(&reclaim_events, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("raw_tp/mm_vmscan_direct_reclaim_begin")
int direct_reclaim_begin(struct bpf_raw_tracepoint_args *ctx)
{
	begin(&direct_start);
	return 0;
}

/* (unsigned long nr_reclaimed) */
SEC("raw_tp/mm_vmscan_direct_reclaim_end")
int direct_reclaim_end(struct bpf_raw_tracepoint_args *ctx)
{
	end(&direct_start, ctx->args[0], false);
	return 0;
}

SEC("raw_tp/mm_vmscan_memcg_reclaim_begin")
int memcg_reclaim_begin(struct bpf_raw_tracepoint_args *ctx)
{
	begin(&memcg_start);
	return 0;
}

SEC("raw_tp/mm_vmscan_memcg_reclaim_end")
int memcg_reclaim_end(struct bpf_raw_tracepoint_args *ctx)
{
	end(&memcg_start, ctx->args[0], true);
	return 0;
}

/* mark_victim gained comm, rss and its task_struct argument in 6.8: a field of its record tells which */
struct trace_event_raw_mark_victim___68 {
	unsigned long total_vm;
} __attribute__((preserve_access_index));

/* (int pid) before 6.8, (struct task_struct *task, uid_t uid) since */
SEC("raw_tp/mark_victim")
int victim_marked(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 pid;
	struct oomtrail_victim_state v = { .mark_ns = bpf_ktime_get_boot_ns() };

	if (bpf_core_field_exists(((struct trace_event_raw_mark_victim___68 *)0)->total_vm))
		pid = BPF_CORE_READ((struct task_struct *)ctx->args[0], pid);
	else
		pid = (__u32)ctx->args[0];
	/* a re-mark of a dying task keeps the first kill time */
	bpf_map_update_elem(&victims, &pid, &v, BPF_NOEXIST);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int task_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct oomtrail_victim_state *v = bpf_map_lookup_elem(&victims, &tid);

	if (v && !v->exit_ns) {
		v->exit_ns = bpf_ktime_get_boot_ns();
		v->tgid = pid_tgid >> 32;
	}
	return 0;
}

/* (int pid) */
SEC("raw_tp/finish_task_reaping")
int task_reaped(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 pid = (__u32)ctx->args[0];
	struct oomtrail_victim_state *v = bpf_map_lookup_elem(&victims, &pid);

	if (v && !v->reaped_ns)
		v->reaped_ns = bpf_ktime_get_boot_ns();
	return 0;
}

/* The memory cgroups user space samples: kernfs id -> slot, and each slot's usage. User space
 * inserts and deletes the ids and reads the slots through its mapping of `usage_slots`. */
#define USAGE_SLOTS 16384

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, USAGE_SLOTS);
	__type(key, __u64);
	__type(value, __u32);
} slot_by_cg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, USAGE_SLOTS);
	__type(key, __u32);
	__type(value, struct oomtrail_memcg_usage);
} usage_slots SEC(".maps");

/*
 * One pass over the memory hierarchy (a read() of an iterator made from this program's link, Linux
 * >= 6.1) reads every sampled cgroup's page counter: three syscalls per trail step instead of one
 * pread of memory.current / memory.usage_in_bytes (the same counter those files print) per cgroup.
 * It writes nothing to the seq file: a cgroup iterator stops after one kernel buffer of output.
 */
SEC("iter/cgroup")
int memcg_usage(struct bpf_iter__cgroup *ctx)
{
	struct cgroup *cgrp = ctx->cgroup;
	int mem = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct cgroup_subsys_state *css = NULL;
	struct oomtrail_memcg_usage *u;
	struct mem_cgroup *memcg;
	__u32 *slot;
	__u64 id;

	if (!cgrp) /* the call after the last cgroup */
		return 0;
	id = BPF_CORE_READ(cgrp, kn, id);
	slot = bpf_map_lookup_elem(&slot_by_cg, &id);
	if (!slot)
		return 0;
	u = bpf_map_lookup_elem(&usage_slots, slot);
	if (!u)
		return 0;
	bpf_core_read(&css, sizeof(css), &cgrp->subsys[mem]);
	if (!css)
		return 0;
	/* css is mem_cgroup's first member; the offset is relocated all the same */
	memcg = (void *)css - bpf_core_field_offset(struct mem_cgroup, css);
	u->usage_pages = BPF_CORE_READ(memcg, memory.usage.counter);
	u->visits++;
	return 0;
}
