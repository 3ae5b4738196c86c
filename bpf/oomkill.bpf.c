// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * oomkill: one ring-buffer event per OOM victim.
 *
 * Every victim passes mark_oom_victim() -> tracepoint oom:mark_victim, including each task of a
 * memory.oom.group kill, so victims are always emitted from a mark_victim program. The fentry/kprobe
 * programs on oom_kill_process() only stash the oom_control (constraint, memcg, gfp, order,
 * totalpages) for the mark_victim calls the same thread makes next; without them the constraint
 * and OOM cgroup are inferred from memcg usage.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "oomkill.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Anchors the event struct in the object's BTF, so a test can compare it with the decoder. */
const struct oomtrail_event *unused_event __attribute__((unused));

/* Sized by user space before load (collectors.oomkill.ring_bytes, bpf_map__set_max_entries). A full event is
 * ~8.5 kB (two whole cgroup paths), one whose cgroups are those of the last full event ~0.3 kB (header only,
 * OOMTRAIL_F_CG_AS_BEFORE): a 1,000-process memory.oom.group sweep of one cgroup takes ~344 KiB. An overflow
 * is counted and recovered from the kernel log while running. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/*
 * One OOM-killer invocation at a time: every mark_oom_victim() (the only caller of the mark_victim tracepoint)
 * runs under the global oom_lock mutex. It is called from out_of_memory() (its task_will_free_mem(current)
 * shortcut) and from __oom_kill_process() (oom_kill_process(), i.e. out_of_memory() again, victim and
 * memory.oom.group members alike), and every caller of out_of_memory() holds oom_lock: the page allocator's
 * __alloc_pages_may_oom() (mutex_trylock), the memcg charge path's mem_cgroup_out_of_memory()
 * (mutex_lock_killable), sysrq-f's moom_callback() (mutex_lock), pagefault_out_of_memory() up to 5.15
 * (mutex_trylock) and the BPF OOM kfuncs of 7.x (bpf_out_of_memory(): oom_lock; bpf_oom_kill_process() runs
 * inside out_of_memory()). Read in mm/oom_kill.c, mm/memcontrol.c, mm/page_alloc.c of 5.10 to 7.x.
 * So the two maps below, each a single slot, are never used by two victims at once.
 */

/* The event being built: its size is known only once both cgroups are (header only or full), and a
 * bpf_ringbuf_reserve() needs a constant size, so the event is built here and copied out with
 * bpf_ringbuf_output() at the size it turned out to have (one copy of the fill code, verified once). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct oomtrail_event);
} event_scratch SEC(".maps");

/* The cgroup ids of the last full event submitted (both 0: none yet). A memory.oom.group sweep's members
 * share both cgroups (the kernel kills them one memcg after another), so after the first each goes out as
 * a header naming these ids. Updated only once the full event is in the ring: a full event that did not fit
 * is never referred to. */
struct last_cg_ids {
	__u64 victim;
	__u64 oom;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct last_cg_ids);
} last_full_cg SEC(".maps");

/* Events that could not be reserved: never silent, user space reports the count. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

struct victim_key {
	__u64 start_time;
	__u32 tgid;
	__u32 _pad;
};

/* Processes already reported; LRU so it never fills: a process is re-marked within seconds. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct victim_key);
	__type(value, __u8);
} marked_victims SEC(".maps");

/* Re-marks of an already reported process (not kills: the kernel does not count them either). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} remarks SEC(".maps");

/* memcg (kernfs id) -> its memory_events_local[MEMCG_OOM] when we last looked, and the last
 * OOM episode (thread, time) it was found to be the OOM memcg of */
struct memcg_oom_state {
	__u64 count;
	__u64 episode_ns;
	__u32 episode_tid;
	__u32 credit; /* MEMCG_OOM bumps not yet matched with a victim */
};

/* Bumps that never led to a kill (the margin came back under oom_lock) must not pile up. */
#define MEMCG_OOM_CREDIT_MAX 8

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct memcg_oom_state);
} memcg_oom_seen SEC(".maps");

struct oom_ctx {
	__u64 boot_ns;
	__u64 gfp_mask;
	__u64 totalpages;
	__u64 memcg;  /* struct mem_cgroup *, NULL for a global OOM */
	__u64 chosen; /* struct task_struct * */
	__s32 order;
	__u32 constraint;
	__u32 hook;
	__u32 _pad;
};

/* LRU: an entry is only needed for the few mark_victim calls right after it is saved, and nothing
 * deletes it (a group kill reads it once per member); a plain hash filled up after 1,024 threads. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct oom_ctx);
} oom_ctx_by_tid SEC(".maps");

/* Saves that failed (never expected with LRU): those victims fall back to inference, counted. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} oom_ctx_unsaved SEC(".maps");

/* The task the OOM killer just sent SIGKILL to, by the killing thread: __oom_kill_process() sends
 * the signal and then calls mark_oom_victim() on the same task, and before 6.8 mark_victim carries
 * only that task's pid. */
struct kill_target {
	__u64 boot_ns;
	__u64 task; /* struct task_struct *, referenced by the OOM killer until after mark_victim */
	__s32 pid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct kill_target);
} kill_target_by_tid SEC(".maps");

/* oom_kill_process() calls mark_oom_victim() synchronously; an older entry belongs to another OOM. */
#define OOM_CTX_MAX_AGE_NS 1000000000ULL
/* A memcg whose usage is within this many pages of its max is taken as the one at its limit:
 * one failed charge is at most a THP (512 pages) plus the per-cpu charge batch (64). */
#define MEMCG_AT_LIMIT_SLACK_PAGES 576
#define PAGE_COUNTER_UNLIMITED (1ULL << 50)
#define SIGKILL 9
#define SEND_SIG_PRIV ((void *)1)

/* Layouts that changed across kernels; the ___suffix flavors let one object run on both. */
struct kernfs_node___pre615 {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

struct kernfs_node___615 {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

struct mm_rss_stat___pre62 {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));

struct mm_struct___pre62 {
	struct mm_rss_stat___pre62 rss_stat;
} __attribute__((preserve_access_index));

struct mm_struct___62 {
	struct percpu_counter rss_stat[4];
} __attribute__((preserve_access_index));

/* mark_victim gained comm, rss and its task_struct argument in 6.8. */
struct trace_event_raw_mark_victim___68 {
	struct trace_entry ent;
	int pid;
	__u32 __data_loc_comm;
	unsigned long total_vm;
	unsigned long anon_rss;
	unsigned long file_rss;
	unsigned long shmem_rss;
	uid_t uid;
	unsigned long pgtables;
	short oom_score_adj;
} __attribute__((preserve_access_index));

/* The kernel's MM_* counter indexes, stable since 4.5. */
#define MM_FILE 0
#define MM_ANON 1
#define MM_SHMEM 3

/*
 * Linux 7.0 ("mm: fix OOM killer inaccuracy on large many-core systems", mm/oom_kill.c) prints the
 * "Killed process" line (and the task table, and ranks victims) with get_mm_counter_sum(): the
 * global count plus every CPU's pending delta, where 6.2 to 6.19 print get_mm_counter(), the global
 * count alone. That change leaves no trace in BTF; the rename of mm_struct's trailing cpu_bitmap to
 * flexible_array came with it (same author and series, same 7.0 merge) and is what is asked here.
 */
struct mm_struct___70 {
	char flexible_array[0];
} __attribute__((preserve_access_index));

/* The per-CPU areas' offsets and how many CPUs can exist: typeless (address-only) ksyms that libbpf
 * resolves from /proc/kallsyms, both data symbols (CONFIG_KALLSYMS_ALL, as Debian builds). A BTF-typed
 * percpu ksym (this_cpu_off) would do without kallsyms in libbpf, but the kernel itself looks it up
 * there and refuses the whole object where it is missing (ENOENT on a 6.18 without KALLSYMS_ALL).
 * Weak: 0 when not found; the per-CPU part is then not read and the event says so. */
extern const void __per_cpu_offset __ksym __weak;
extern const void nr_cpu_ids __ksym __weak;

/* CPUs summed at most: each costs four reads under the OOM lock; a bigger machine keeps the global
 * count (and says so with OOMTRAIL_F_RSS_INEXACT). */
#define OOMTRAIL_PCPU_MAX 1024

static __always_inline bool kernel_prints_rss_sum(void)
{
	return bpf_core_field_exists(((struct mm_struct___62 *)0)->rss_stat) &&
	       bpf_core_field_exists(((struct mm_struct___70 *)0)->flexible_array);
}

/* percpu_counter_sum() of the three RSS counters at once, one pass over the CPUs, as
 * __percpu_counter_sum() adds them (offline CPUs hold 0: their deltas are folded in when they go).
 * False when the per-CPU part cannot be read whole; out[] then keeps the global counts. */
static __always_inline bool rss_sums(struct mm_struct *mm, long out[3])
{
	struct mm_struct___62 *m = (void *)mm;
	const unsigned long *offsets = (const unsigned long *)&__per_cpu_offset;
	__u8 *pcpu[3];
	long delta[3] = {};
	__u32 ncpu = 0;

	if (!offsets || !&nr_cpu_ids || bpf_probe_read_kernel(&ncpu, sizeof(ncpu), &nr_cpu_ids) ||
	    ncpu == 0 || ncpu > OOMTRAIL_PCPU_MAX)
		return false;
	pcpu[0] = (__u8 *)BPF_CORE_READ(m, rss_stat[MM_ANON].counters);
	pcpu[1] = (__u8 *)BPF_CORE_READ(m, rss_stat[MM_FILE].counters);
	pcpu[2] = (__u8 *)BPF_CORE_READ(m, rss_stat[MM_SHMEM].counters);
	if (!pcpu[0] || !pcpu[1] || !pcpu[2])
		return false;
	for (__u32 cpu = 0; cpu < OOMTRAIL_PCPU_MAX && cpu < ncpu; cpu++) {
		unsigned long off = 0;
		__s32 v[3] = {};

		if (bpf_probe_read_kernel(&off, sizeof(off), &offsets[cpu]) ||
		    bpf_probe_read_kernel(&v[0], sizeof(v[0]), pcpu[0] + off) ||
		    bpf_probe_read_kernel(&v[1], sizeof(v[1]), pcpu[1] + off) ||
		    bpf_probe_read_kernel(&v[2], sizeof(v[2]), pcpu[2] + off))
			return false;
		delta[0] += v[0];
		delta[1] += v[1];
		delta[2] += v[2];
	}
	out[0] += delta[0];
	out[1] += delta[1];
	out[2] += delta[2];
	return true;
}

static __always_inline __u64 clamp0(long v)
{
	/* get_mm_counter() and get_mm_counter_sum() clamp the same way before the kernel prints */
	return v < 0 ? 0 : v;
}

static __always_inline long mm_counter_raw(struct mm_struct *mm, int member)
{
	long v = 0;

	if (bpf_core_field_exists(((struct mm_struct___62 *)mm)->rss_stat)) {
		struct mm_struct___62 *m = (void *)mm;
		v = BPF_CORE_READ(m, rss_stat[member].count);
	} else if (bpf_core_field_exists(((struct mm_struct___pre62 *)mm)->rss_stat)) {
		struct mm_struct___pre62 *m = (void *)mm;
		v = BPF_CORE_READ(m, rss_stat.count[member].counter);
	}
	return v;
}

/* The victim's RSS as this kernel prints it: the global counts, or on 7.0+ their exact sums. */
static __always_inline void fill_rss(struct oomtrail_event *e, struct mm_struct *mm)
{
	long v[3] = { mm_counter_raw(mm, MM_ANON), mm_counter_raw(mm, MM_FILE), mm_counter_raw(mm, MM_SHMEM) };

	/* Split RSS counting (before 6.2): the victim, woken by the SIGKILL just sent, folds its cached
	 * counts into its mm (sync_mm_rss() in do_exit) while we read, so three reads can straddle the
	 * fold (seen in a 1,000-process sweep: anon from before it, file and shmem from after). The fold
	 * happens once: read again until two passes agree, so the counts are all from one side of it. */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		long w[3] = { mm_counter_raw(mm, MM_ANON), mm_counter_raw(mm, MM_FILE), mm_counter_raw(mm, MM_SHMEM) };

		if (w[0] == v[0] && w[1] == v[1] && w[2] == v[2])
			break;
		v[0] = w[0];
		v[1] = w[1];
		v[2] = w[2];
	}

	if (kernel_prints_rss_sum() && !rss_sums(mm, v))
		e->flags |= OOMTRAIL_F_RSS_INEXACT;
	e->anon_rss_pages = clamp0(v[0]);
	e->file_rss_pages = clamp0(v[1]);
	e->shmem_rss_pages = clamp0(v[2]);
}

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	struct kernfs_node___pre615 *old = (void *)kn;
	struct kernfs_node___615 *cur = (void *)kn;

	if (bpf_core_field_exists(old->parent))
		return BPF_CORE_READ(old, parent);
	return BPF_CORE_READ(cur, __parent);
}

static __always_inline void fill_cgroup_path(struct oomtrail_cgroup_path *out, struct kernfs_node *kn)
{
	__u32 depth = 0;

	if (!kn)
		return;
	out->kn_id = BPF_CORE_READ(kn, id);
	for (int i = 0; i < OOMTRAIL_CG_DEPTH; i++) {
		struct kernfs_node *parent = kn_parent(kn);

		if (!parent) /* the hierarchy root has no name in the printed path */
			break;
		bpf_probe_read_kernel_str(out->names[i], OOMTRAIL_CG_NAME_LEN, BPF_CORE_READ(kn, name));
		depth++;
		kn = parent;
	}
	out->depth = depth;
	out->truncated = depth == OOMTRAIL_CG_DEPTH && kn_parent(kn) != NULL;
}

static __always_inline struct mem_cgroup *task_memcg(struct task_struct *task)
{
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct css_set *cgroups = BPF_CORE_READ(task, cgroups);
	struct cgroup_subsys_state *css = NULL;

	if (!cgroups)
		return NULL;
	bpf_core_read(&css, sizeof(css), &cgroups->subsys[id]);
	/* css is the first member of struct mem_cgroup */
	return (struct mem_cgroup *)css;
}

static __always_inline struct kernfs_node *memcg_kn(struct mem_cgroup *memcg)
{
	return memcg ? BPF_CORE_READ(memcg, css.cgroup, kn) : NULL;
}

static __always_inline void fill_memcg_counters(struct oomtrail_event *e, struct mem_cgroup *memcg)
{
	e->memcg_limit_pages = BPF_CORE_READ(memcg, memory.max);
	e->memcg_usage_pages = BPF_CORE_READ(memcg, memory.usage.counter);
	e->flags |= OOMTRAIL_F_HAS_MEMCG;
}

/*
 * memory_at_kill. mark_victim runs after dump_header() printed (and flushed) the OOM memcg's
 * stats and before the victim frees anything, so these reads are what the kernel reported.
 */
struct mem_cgroup___vmptr { /* >= 6.3: vmstats allocated separately */
	struct memcg_vmstats *vmstats;
} __attribute__((preserve_access_index));

struct mem_cgroup___vmemb { /* older: embedded, state[] indexed by the item itself */
	struct memcg_vmstats vmstats;
} __attribute__((preserve_access_index));

struct page_counter___tf {
	bool track_failcnt;
} __attribute__((preserve_access_index));

/* kmem is cgroup v1's counter: absent from kernels built without CONFIG_MEMCG_V1 (6.11+ option; Debian's arm64
 * cloud kernels), so not named through vmlinux.h's struct, which may lack it */
struct mem_cgroup___kmem {
	struct page_counter kmem;
} __attribute__((preserve_access_index));

#define NSI_EXISTS(n) bpf_core_enum_value_exists(enum node_stat_item, n)
#define NSI(n) bpf_core_enum_value(enum node_stat_item, n)
/* Items newer than the kernel this object's headers come from (7.x); only their existence is asked. */
enum node_stat_item___7x {
	NR_VMALLOC___7x, PGSTEAL_KSWAPD___7x, PGSTEAL_DIRECT___7x, PGSTEAL_KHUGEPAGED___7x,
	PGSTEAL_PROACTIVE___7x, PGSTEAL_ANON___7x, PGSTEAL_FILE___7x, PGSCAN_KSWAPD___7x,
	PGSCAN_DIRECT___7x, PGSCAN_KHUGEPAGED___7x, PGSCAN_PROACTIVE___7x, PGSCAN_ANON___7x,
	PGSCAN_FILE___7x, PGREFILL___7x,
};
#define NSI7_EXISTS(n) bpf_core_enum_value_exists(enum node_stat_item___7x, n##___7x)
/* memcg_node_stat_items[] as of 7.2 (6.18 and 6.12 are this list without the items they lack), in
 * enum order (the kernel keeps the list sorted so: 7.2's array read from its image); items a config
 * leaves out of the enum are left out of the list too. A kernel whose list differs is caught by the
 * length check in fill_mem_at_kill() and then reports no stats (user space falls back to kmsg).
 * Only existence is asked of these: a value relocation of a missing enumerator must never be reachable.
 * X: in this object's headers; Y: newer (7.x). NR_VMALLOC (7.x) sits between NR_ANON_THPS and
 * NR_KERNEL_STACK_KB in the enum, which mak_slot() counts without asking its value. */
#define MEMCG_NODE_ITEMS(X, Y) \
	MEMCG_NODE_PREFIX(X) Y(NR_VMALLOC) X(NR_SECONDARY_PAGETABLE) X(NR_SWAPCACHE) X(PGPROMOTE_SUCCESS) \
	X(PGDEMOTE_KSWAPD) X(PGDEMOTE_DIRECT) X(PGDEMOTE_KHUGEPAGED) X(PGDEMOTE_PROACTIVE) \
	Y(PGSTEAL_KSWAPD) Y(PGSTEAL_DIRECT) Y(PGSTEAL_KHUGEPAGED) Y(PGSTEAL_PROACTIVE) Y(PGSTEAL_ANON) \
	Y(PGSTEAL_FILE) Y(PGSCAN_KSWAPD) Y(PGSCAN_DIRECT) Y(PGSCAN_KHUGEPAGED) Y(PGSCAN_PROACTIVE) \
	Y(PGSCAN_ANON) Y(PGSCAN_FILE) Y(PGREFILL) X(NR_HUGETLB)
/* The head of that list, up to the last item read here: unconditional in every kernel since 5.9,
 * so the rank of an item read here depends on no enumerator a kernel may lack but NR_VMALLOC. */
#define MEMCG_NODE_PREFIX(X) \
	X(NR_INACTIVE_ANON) X(NR_ACTIVE_ANON) X(NR_INACTIVE_FILE) X(NR_ACTIVE_FILE) X(NR_UNEVICTABLE) \
	X(NR_SLAB_RECLAIMABLE_B) X(NR_SLAB_UNRECLAIMABLE_B) X(WORKINGSET_REFAULT_ANON) \
	X(WORKINGSET_REFAULT_FILE) X(WORKINGSET_ACTIVATE_ANON) X(WORKINGSET_ACTIVATE_FILE) \
	X(WORKINGSET_RESTORE_ANON) X(WORKINGSET_RESTORE_FILE) X(WORKINGSET_NODERECLAIM) \
	X(NR_ANON_MAPPED) X(NR_FILE_MAPPED) X(NR_FILE_PAGES) X(NR_FILE_DIRTY) X(NR_WRITEBACK) \
	X(NR_SHMEM) X(NR_SHMEM_THPS) X(NR_FILE_THPS) X(NR_ANON_THPS) X(NR_KERNEL_STACK_KB) \
	X(NR_PAGETABLE)

struct mak_stats {
	__u8 *base;  /* &state[0] */
	__u32 slots; /* entries in state[] */
	__u32 n_node;
	bool compacted;
};

/* The state[] slot of a node_stat_item / memcg_stat_item on this kernel, or -1. */
static __always_inline int mak_slot(const struct mak_stats *m, __u32 item)
{
	__u32 memcg_swap = bpf_core_enum_value(enum memcg_stat_item, MEMCG_SWAP);
	__u32 rank = 0;

	if (!m->compacted)
		return item < m->slots ? (int)item : -1;
	if (item >= memcg_swap)
		return m->n_node + (item - memcg_swap) < m->slots ? (int)(m->n_node + item - memcg_swap) : -1;
#define RANK_BELOW(n) if (NSI(n) < item) rank++;
	MEMCG_NODE_PREFIX(RANK_BELOW)
#undef RANK_BELOW
	if (NSI7_EXISTS(NR_VMALLOC) && item >= NSI(NR_KERNEL_STACK_KB))
		rank++;
	return rank < m->n_node ? (int)rank : -1;
}

static __always_inline __u64 mak_read(const struct mak_stats *m, __u32 item)
{
	int slot = mak_slot(m, item);
	long v = 0;

	if (slot < 0 || slot >= 64)
		return 0;
	bpf_probe_read_kernel(&v, sizeof(v), m->base + slot * sizeof(long));
	return v < 0 ? 0 : v; /* memcg_page_state() clamps the same way */
}

static __always_inline void fill_mem_at_kill(struct oomtrail_event *e, struct mem_cgroup *memcg)
{
	struct mem_cgroup___vmptr *vp = (void *)memcg;
	struct mem_cgroup___vmemb *ve = (void *)memcg;
	struct mem_cgroup___kmem *km = (void *)memcg;
	struct page_counter___tf *mem_tf = (void *)&memcg->memory;
	int max_idx = bpf_core_enum_value(enum memcg_memory_event, MEMCG_MAX);
	struct mak_stats m = {};
	__u32 memcg_items;

	e->mak_usage_pages = BPF_CORE_READ(memcg, memory.usage.counter);
	e->mak_limit_pages = BPF_CORE_READ(memcg, memory.max);
	/* since 6.15ish cgroup v2 keeps no page_counter failcnt and prints memory.events max instead */
	if (bpf_core_field_exists(mem_tf->track_failcnt) && !BPF_CORE_READ(mem_tf, track_failcnt))
		bpf_core_read(&e->mak_failcnt, sizeof(e->mak_failcnt), &memcg->memory_events[max_idx]);
	else
		e->mak_failcnt = BPF_CORE_READ(memcg, memory.failcnt);
	e->mak_flags |= OOMTRAIL_MAK_COUNTERS;
	if (bpf_core_field_exists(memcg->swap)) {
		e->mak_swap_usage_pages = BPF_CORE_READ(memcg, swap.usage.counter);
		e->mak_swap_limit_pages = BPF_CORE_READ(memcg, swap.max);
		e->mak_flags |= OOMTRAIL_MAK_SWAP;
	}
	if (bpf_core_field_exists(km->kmem)) {
		e->mak_kmem_usage_pages = BPF_CORE_READ(km, kmem.usage.counter);
		e->mak_flags |= OOMTRAIL_MAK_KMEM;
	}

	if (bpf_core_field_exists(vp->vmstats)) {
		__u8 *vs = (__u8 *)BPF_CORE_READ(vp, vmstats);

		if (!vs)
			return;
		m.base = vs + bpf_core_field_offset(struct memcg_vmstats, state);
	} else if (bpf_core_field_exists(ve->vmstats)) {
		m.base = (__u8 *)memcg + bpf_core_field_offset(struct mem_cgroup___vmemb, vmstats) +
			 bpf_core_field_offset(struct memcg_vmstats, state);
	} else {
		return;
	}
	m.slots = bpf_core_field_size(((struct memcg_vmstats *)0)->state) / sizeof(long);
	e->mak_stat_slots = m.slots;
	memcg_items = bpf_core_enum_value(enum memcg_stat_item, MEMCG_NR_STAT) -
		      bpf_core_enum_value(enum memcg_stat_item, MEMCG_SWAP);
	if (m.slots < bpf_core_enum_value(enum memcg_stat_item, MEMCG_NR_STAT)) {
		__u32 listed = 0;

		m.compacted = true;
		e->mak_flags |= OOMTRAIL_MAK_COMPACTED;
		if (m.slots <= memcg_items)
			return;
		m.n_node = m.slots - memcg_items;
#define COUNT_LISTED(n) if (NSI_EXISTS(n)) listed++;
#define COUNT_LISTED_7X(n) if (NSI7_EXISTS(n)) listed++;
		MEMCG_NODE_ITEMS(COUNT_LISTED, COUNT_LISTED_7X)
#undef COUNT_LISTED_7X
#undef COUNT_LISTED
		if (listed != m.n_node) {
			e->mak_flags |= OOMTRAIL_MAK_UNMAPPED;
			return;
		}
	}
	e->mak_anon_pages = mak_read(&m, NSI(NR_ANON_MAPPED));
	e->mak_file_pages = mak_read(&m, NSI(NR_FILE_PAGES));
	e->mak_shmem_pages = mak_read(&m, NSI(NR_SHMEM));
	e->mak_file_mapped_pages = mak_read(&m, NSI(NR_FILE_MAPPED));
	e->mak_file_dirty_pages = mak_read(&m, NSI(NR_FILE_DIRTY));
	e->mak_file_writeback_pages = mak_read(&m, NSI(NR_WRITEBACK));
	e->mak_slab_reclaimable_bytes = mak_read(&m, NSI(NR_SLAB_RECLAIMABLE_B));
	e->mak_slab_unreclaimable_bytes = mak_read(&m, NSI(NR_SLAB_UNRECLAIMABLE_B));
	e->mak_pagetables_pages = mak_read(&m, NSI(NR_PAGETABLE));
	e->mak_sock_pages = mak_read(&m, bpf_core_enum_value(enum memcg_stat_item, MEMCG_SOCK));
	e->mak_kmem_pages = mak_read(&m, bpf_core_enum_value(enum memcg_stat_item, MEMCG_KMEM));
	e->mak_swap_pages = mak_read(&m, bpf_core_enum_value(enum memcg_stat_item, MEMCG_SWAP));
	e->mak_flags |= OOMTRAIL_MAK_STATS;
}

static __always_inline bool memcg_at_limit(struct mem_cgroup *memcg)
{
	__u64 max = BPF_CORE_READ(memcg, memory.max);
	long usage = BPF_CORE_READ(memcg, memory.usage.counter);

	return max < PAGE_COUNTER_UNLIMITED && usage + MEMCG_AT_LIMIT_SLACK_PAGES >= (long)max;
}

/*
 * Without oom_control, which memcg ran out? mem_cgroup_oom() bumps the OOM memcg's own
 * memory_events_local[MEMCG_OOM] (ancestors get only the hierarchical count) before it picks a
 * victim. Each bump is a credit for one victim: concurrent invocations bump it together and then
 * kill one after another under oom_lock. So the nearest ancestor-or-self of the victim with a
 * credit left is the one. The other victims of a memory.oom.group kill come from the same thread
 * in the same call without a bump: they belong to that memcg's current episode. Failing both
 * (a memcg never seen before), "sits at its limit" decides; usage alone misleads in bursts,
 * where the previous victim is already freeing memory.
 */
static __always_inline struct mem_cgroup *infer_oom_memcg(struct mem_cgroup *memcg, __u32 tid, __u64 now)
{
	int oom_idx = bpf_core_enum_value(enum memcg_memory_event, MEMCG_OOM);
	struct mem_cgroup *found = NULL;

	for (int i = 0; i < OOMTRAIL_CG_DEPTH && memcg; i++) {
		__u64 id = BPF_CORE_READ(memcg, css.cgroup, kn, id);
		long count = 0;
		struct memcg_oom_state fresh = {};
		struct memcg_oom_state *st = bpf_map_lookup_elem(&memcg_oom_seen, &id);

		if (bpf_core_field_exists(memcg->memory_events_local))
			bpf_core_read(&count, sizeof(count), &memcg->memory_events_local[oom_idx]);
		if (!st) {
			/* history unknown: no credit for what happened before we looked */
			fresh.count = count;
			bpf_map_update_elem(&memcg_oom_seen, &id, &fresh, BPF_ANY);
			st = bpf_map_lookup_elem(&memcg_oom_seen, &id);
			if (!st)
				break;
		} else if (count > (long)st->count) {
			st->credit += count - st->count;
			if (st->credit > MEMCG_OOM_CREDIT_MAX)
				st->credit = MEMCG_OOM_CREDIT_MAX;
		}
		st->count = count;
		if (!found && st->credit > 0) {
			st->credit--;
			found = memcg;
		}
		if (found == memcg || (!found && st->episode_tid == tid && now - st->episode_ns < OOM_CTX_MAX_AGE_NS)) {
			found = memcg;
			st->episode_ns = now;
			st->episode_tid = tid;
		}
		memcg = (struct mem_cgroup *)BPF_CORE_READ(memcg, css.parent);
	}
	return found;
}

/* The fallback when no count or episode names the memcg. */
static __always_inline struct mem_cgroup *nearest_at_limit(struct mem_cgroup *memcg)
{
	for (int i = 0; i < OOMTRAIL_CG_DEPTH && memcg; i++) {
		if (memcg_at_limit(memcg))
			return memcg;
		memcg = (struct mem_cgroup *)BPF_CORE_READ(memcg, css.parent);
	}
	return NULL;
}

static __always_inline __u32 map_constraint(__u32 kernel_value)
{
	if (kernel_value == bpf_core_enum_value(enum oom_constraint, CONSTRAINT_MEMCG))
		return OOMTRAIL_CONSTRAINT_MEMCG;
	if (kernel_value == bpf_core_enum_value(enum oom_constraint, CONSTRAINT_CPUSET))
		return OOMTRAIL_CONSTRAINT_CPUSET;
	if (kernel_value == bpf_core_enum_value(enum oom_constraint, CONSTRAINT_MEMORY_POLICY))
		return OOMTRAIL_CONSTRAINT_MEMPOLICY;
	if (kernel_value == bpf_core_enum_value(enum oom_constraint, CONSTRAINT_NONE))
		return OOMTRAIL_CONSTRAINT_GLOBAL;
	return OOMTRAIL_CONSTRAINT_UNKNOWN;
}

static __always_inline void save_oom_ctx(struct oom_control *oc, __u32 hook)
{
	struct oom_ctx c = {};
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	c.boot_ns = bpf_ktime_get_boot_ns();
	c.gfp_mask = BPF_CORE_READ(oc, gfp_mask);
	c.order = BPF_CORE_READ(oc, order);
	c.totalpages = BPF_CORE_READ(oc, totalpages);
	c.memcg = (__u64)BPF_CORE_READ(oc, memcg);
	c.chosen = (__u64)BPF_CORE_READ(oc, chosen);
	c.constraint = map_constraint(BPF_CORE_READ(oc, constraint));
	c.hook = hook;
	if (bpf_map_update_elem(&oom_ctx_by_tid, &tid, &c, BPF_ANY)) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&oom_ctx_unsaved, &zero);

		if (n)
			__sync_fetch_and_add(n, 1);
	}
}

static __always_inline void save_kill_target(int sig, void *info, struct task_struct *task)
{
	struct kill_target t = {};
	__u32 tid;

	/* only the kernel's own SIGKILL (SEND_SIG_PRIV), as __oom_kill_process() sends it */
	if (sig != SIGKILL || info != SEND_SIG_PRIV || !task)
		return;
	tid = (__u32)bpf_get_current_pid_tgid();
	t.boot_ns = bpf_ktime_get_boot_ns();
	t.task = (__u64)task;
	t.pid = BPF_CORE_READ(task, pid);
	bpf_map_update_elem(&kill_target_by_tid, &tid, &t, BPF_ANY);
}

/* Before 6.8, mark_victim carries only a pid: the task is the one this thread just killed. */
static __always_inline struct task_struct *killed_task(__u32 tid, __s32 pid, __u64 now)
{
	struct kill_target *t = bpf_map_lookup_elem(&kill_target_by_tid, &tid);

	if (!t || t->pid != pid || now - t->boot_ns > OOM_CTX_MAX_AGE_NS)
		return NULL;
	return (struct task_struct *)t->task;
}

/* The pid a process sees for itself: pid->numbers[pid->level] of its thread-group leader. PID 1 in
 * a container's namespace is its init: killing it ends the container, killing another does not. */
static __always_inline void fill_ns_pid(struct oomtrail_event *e, struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, group_leader, thread_pid);
	unsigned int level;
	int nr = 0;

	if (!pid)
		return;
	level = BPF_CORE_READ(pid, level);
	if (level > 32) /* MAX_PID_NS_LEVEL */
		return;
	bpf_core_read(&nr, sizeof(nr), &pid->numbers[level].nr);
	e->victim_ns_pid = nr;
	e->victim_ns_level = level;
}

/* Returns the victim's memcg's kernfs node (its path is filled later, only into a full event). */
static __always_inline struct kernfs_node *fill_victim_from_task(struct oomtrail_event *e, struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	struct mem_cgroup *memcg = task_memcg(task);

	e->victim_pid = BPF_CORE_READ(task, tgid);
	e->victim_tid = BPF_CORE_READ(task, pid);
	BPF_CORE_READ_STR_INTO(&e->victim_comm, task, comm);
	e->victim_uid = BPF_CORE_READ(task, real_cred, uid.val);
	e->oom_score_adj = BPF_CORE_READ(task, signal, oom_score_adj);
	fill_ns_pid(e, task);
	if (mm) {
		e->total_vm_pages = BPF_CORE_READ(mm, total_vm);
		fill_rss(e, mm);
		e->pgtables_bytes = BPF_CORE_READ(mm, pgtables_bytes.counter);
	}
	e->flags |= OOMTRAIL_F_HAS_TASK;
	if (!memcg)
		return NULL;
	e->flags |= OOMTRAIL_F_VICTIM_CG_VALID;
	return memcg_kn(memcg);
}

/* 6.8+: the tracepoint record itself carries what the kernel prints (sizes already in kB). */
static __always_inline void fill_victim_from_tp(struct oomtrail_event *e, void *ctx)
{
	struct trace_event_raw_mark_victim___68 *tp = ctx;
	__u32 loc;

	if (!bpf_core_field_exists(tp->total_vm))
		return;
	loc = BPF_CORE_READ(tp, __data_loc_comm);
	bpf_probe_read_kernel_str(e->victim_comm, sizeof(e->victim_comm), (char *)ctx + (loc & 0xffff));
	/* stored as pages so both sources decode alike; 4 kB pages assumed only by this fallback */
	e->total_vm_pages = BPF_CORE_READ(tp, total_vm) >> 2;
	e->anon_rss_pages = BPF_CORE_READ(tp, anon_rss) >> 2;
	e->file_rss_pages = BPF_CORE_READ(tp, file_rss) >> 2;
	e->shmem_rss_pages = BPF_CORE_READ(tp, shmem_rss) >> 2;
	e->pgtables_bytes = BPF_CORE_READ(tp, pgtables) << 10;
	e->victim_uid = BPF_CORE_READ(tp, uid);
	e->oom_score_adj = BPF_CORE_READ(tp, oom_score_adj);
	e->flags |= OOMTRAIL_F_HAS_TP_FIELDS;
}

/* As mem_cgroup_get_oom_group(): a memcg from the victim's up to the OOM domain (the root for a global OOM)
 * with memory.oom.group set makes the kill a sweep of that memcg. The file exists on cgroup v2 only. */
static __always_inline __u32 oom_group_of(struct task_struct *victim, struct mem_cgroup *oom_memcg)
{
	struct mem_cgroup *memcg = task_memcg(victim);

	if (!bpf_core_field_exists(memcg->oom_group))
		return 0;
	for (int i = 0; i < OOMTRAIL_CG_DEPTH && memcg; i++) {
		if (BPF_CORE_READ(memcg, oom_group))
			return 1;
		if (memcg == oom_memcg)
			break;
		memcg = (struct mem_cgroup *)BPF_CORE_READ(memcg, css.parent);
	}
	return 0;
}

/* Returns the OOM memcg's kernfs node, NULL for the root (global OOM) or none found. */
static __always_inline struct kernfs_node *fill_oom_scope(struct oomtrail_event *e, struct oom_ctx *c, struct task_struct *victim)
{
	struct mem_cgroup *oom_memcg = NULL;

	if (c) {
		e->gfp_mask = c->gfp_mask;
		e->order = c->order;
		e->domain_pages = c->totalpages;
		e->constraint = c->constraint;
		oom_memcg = (struct mem_cgroup *)c->memcg;
		e->flags |= OOMTRAIL_F_HAS_OOM_CONTROL;
	} else {
		e->order = -2; /* unknown */
		if (victim) {
			struct mem_cgroup *vm = task_memcg(victim);

			oom_memcg = infer_oom_memcg(vm, (__u32)bpf_get_current_pid_tgid(), bpf_ktime_get_boot_ns());
			if (!oom_memcg)
				oom_memcg = nearest_at_limit(vm);
		}
		e->constraint = oom_memcg ? OOMTRAIL_CONSTRAINT_MEMCG :
			    (victim ? OOMTRAIL_CONSTRAINT_GLOBAL : OOMTRAIL_CONSTRAINT_UNKNOWN);
		e->flags |= OOMTRAIL_F_CONSTRAINT_INFERRED;
	}
	if (victim && (c || oom_memcg))
		e->oom_group_kill = oom_group_of(victim, oom_memcg);
	if (oom_memcg) {
		fill_memcg_counters(e, oom_memcg);
		fill_mem_at_kill(e, oom_memcg);
		e->flags |= OOMTRAIL_F_OOM_CG_VALID;
		return memcg_kn(oom_memcg);
	}
	if (e->constraint != OOMTRAIL_CONSTRAINT_UNKNOWN) {
		/* global / cpuset / mempolicy: the OOM domain is the root (depth 0 == "/") */
		e->flags |= OOMTRAIL_F_OOM_CG_VALID;
	}
	return NULL;
}

/* Returns true the first time a process is marked. A killed process can be marked again while it
 * exits (another of its threads, or task_will_free_mem() on the next OOM): the kernel neither
 * counts nor logs those, and neither do we. Keyed by tgid + start time, so a reused pid is new. */
static __always_inline bool first_mark(struct task_struct *victim)
{
	struct victim_key key = {
		.start_time = BPF_CORE_READ(victim, group_leader, start_time),
		.tgid = BPF_CORE_READ(victim, tgid),
	};
	__u8 one = 1;

	if (bpf_map_lookup_elem(&marked_victims, &key)) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&remarks, &zero);

		if (n)
			__sync_fetch_and_add(n, 1);
		return false;
	}
	bpf_map_update_elem(&marked_victims, &key, &one, BPF_ANY);
	return true;
}

static __always_inline int emit_victim(void *ctx, __u32 hook, struct task_struct *victim, __s32 tp_pid)
{
	struct task_struct *current = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct oom_ctx *c = bpf_map_lookup_elem(&oom_ctx_by_tid, &tid);
	struct oomtrail_event *e;
	struct last_cg_ids *last;
	struct kernfs_node *victim_kn = NULL, *oom_kn = NULL;
	__u64 now = bpf_ktime_get_boot_ns();
	__u32 from_signal = 0, zero = 0, size;

	if (c && now - c->boot_ns > OOM_CTX_MAX_AGE_NS)
		c = NULL;
	/* A memory.oom.group sweep marks its members in the same oom_kill_process() call, a console line
	 * printed between two: a sweep of hundreds outlasts the age limit (a 115200-baud console takes
	 * ~13 ms a line). Each mark keeps the context alive for the next, so the last member still gets it. */
	if (c)
		c->boot_ns = now;

	if (!victim) {
		struct task_struct *chosen = c ? (struct task_struct *)c->chosen : NULL;

		struct task_struct *leader = BPF_CORE_READ(current, group_leader);

		if (tp_pid == (__s32)tid)
			victim = current;
		else if (chosen && BPF_CORE_READ(chosen, pid) == tp_pid)
			victim = chosen;
		else if (leader && BPF_CORE_READ(leader, pid) == tp_pid)
			victim = leader; /* another thread of the victim ran into the limit */
	}
	if (!victim) {
		/* a group kill's other members: the task also gives the victim's cgroup, which no
		 * tracepoint field carries */
		victim = killed_task(tid, tp_pid, now);
		from_signal = victim ? OOMTRAIL_F_TASK_FROM_SIGNAL : 0;
	}
	if (victim && !first_mark(victim))
		return 0;

	e = bpf_map_lookup_elem(&event_scratch, &zero);
	last = bpf_map_lookup_elem(&last_full_cg, &zero);
	if (!e || !last)
		return 0;
	/* the scratch keeps the previous event; names[] beyond each path's depth are never read */
	__builtin_memset(e, 0, OOMTRAIL_EVENT_HEADER_SIZE);
	e->boot_ns = now;
	e->hook = c ? c->hook : hook;
	e->trigger_pid = pid_tgid >> 32;
	e->trigger_tid = tid;
	e->flags = from_signal;
	bpf_get_current_comm(e->trigger_comm, sizeof(e->trigger_comm));

	if (victim) {
		victim_kn = fill_victim_from_task(e, victim);
	} else {
		fill_victim_from_tp(e, ctx);
		e->victim_pid = tp_pid;
		e->victim_tid = tp_pid;
	}
	oom_kn = fill_oom_scope(e, c, victim);
	e->victim_cg_id = victim_kn ? BPF_CORE_READ(victim_kn, id) : 0;
	e->oom_cg_id = oom_kn ? BPF_CORE_READ(oom_kn, id) : 0;

	if (e->victim_cg_id && e->victim_cg_id == last->victim && e->oom_cg_id == last->oom) {
		e->flags |= OOMTRAIL_F_CG_AS_BEFORE;
		size = OOMTRAIL_EVENT_HEADER_SIZE;
	} else {
		e->victim_cg.kn_id = e->victim_cg.depth = e->victim_cg.truncated = 0;
		e->oom_cg.kn_id = e->oom_cg.depth = e->oom_cg.truncated = 0;
		fill_cgroup_path(&e->victim_cg, victim_kn);
		fill_cgroup_path(&e->oom_cg, oom_kn);
		size = sizeof(*e);
	}
	if (bpf_ringbuf_output(&events, e, size, 0)) {
		__u64 *lost = bpf_map_lookup_elem(&lost_events, &zero);

		if (lost)
			__sync_fetch_and_add(lost, 1);
		return 0;
	}
	if (!(e->flags & OOMTRAIL_F_CG_AS_BEFORE)) {
		last->victim = e->victim_cg_id;
		last->oom = e->oom_cg_id;
	}
	return 0;
}

SEC("fentry/oom_kill_process")
int BPF_PROG(fentry_oom_kill_process, struct oom_control *oc, const char *message)
{
	save_oom_ctx(oc, OOMTRAIL_HOOK_FENTRY);
	return 0;
}

SEC("kprobe/oom_kill_process")
int BPF_KPROBE(kprobe_oom_kill_process, struct oom_control *oc)
{
	save_oom_ctx(oc, OOMTRAIL_HOOK_KPROBE);
	return 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(tp_btf_mark_victim, __u64 arg0)
{
	/* 6.8 changed the prototype from (int pid) to (struct task_struct *, uid_t) */
	if (bpf_core_field_exists(((struct trace_event_raw_mark_victim___68 *)0)->total_vm))
		return emit_victim(ctx, OOMTRAIL_HOOK_TP_BTF, (struct task_struct *)arg0, 0);
	return emit_victim(NULL, OOMTRAIL_HOOK_TP_BTF, NULL, (__s32)arg0);
}

SEC("tracepoint/oom/mark_victim")
int tracepoint_mark_victim(struct trace_event_raw_mark_victim___68 *ctx)
{
	return emit_victim(ctx, OOMTRAIL_HOOK_TRACEPOINT, NULL, BPF_CORE_READ(ctx, pid));
}

/* Companions of the pid-only mark_victim: remember whom the OOM killer just sent SIGKILL to. */
SEC("tp_btf/signal_generate")
int BPF_PROG(tp_btf_signal_generate, int sig, struct kernel_siginfo *info, struct task_struct *task)
{
	save_kill_target(sig, info, task);
	return 0;
}

/* The same without BTF-typed arguments (args: sig, info, task, group, result). */
SEC("raw_tp/signal_generate")
int raw_tp_signal_generate(struct bpf_raw_tracepoint_args *ctx)
{
	save_kill_target((int)ctx->args[0], (void *)ctx->args[1], (struct task_struct *)ctx->args[2]);
	return 0;
}
