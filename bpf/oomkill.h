/* Shared between bpf/oomkill.bpf.c and the decoder in src/collectors/oomkill/event.ts.
 * Fixed-width fields, explicit padding: test/unit/event-layout.test.ts fails if the two drift. */
#ifndef OOMTRAIL_OOMKILL_H
#define OOMTRAIL_OOMKILL_H

#define OOMTRAIL_COMM_LEN 16
/* A kernfs name is at most NAME_MAX (255) bytes: every legal cgroup name fits whole. */
#define OOMTRAIL_CG_NAME_LEN 256
/* Deeper paths keep their 16 leaf-most names; user space completes or flags them. */
#define OOMTRAIL_CG_DEPTH 16

enum oomtrail_hook {
	OOMTRAIL_HOOK_FENTRY = 1,
	OOMTRAIL_HOOK_KPROBE = 2,
	OOMTRAIL_HOOK_TP_BTF = 3,
	OOMTRAIL_HOOK_TRACEPOINT = 4,
};

enum oomtrail_constraint {
	OOMTRAIL_CONSTRAINT_UNKNOWN = 0,
	OOMTRAIL_CONSTRAINT_GLOBAL = 1,
	OOMTRAIL_CONSTRAINT_CPUSET = 2,
	OOMTRAIL_CONSTRAINT_MEMPOLICY = 3,
	OOMTRAIL_CONSTRAINT_MEMCG = 4,
};

enum oomtrail_flags {
	OOMTRAIL_F_HAS_OOM_CONTROL = 1 << 0, /* constraint/gfp/order/domain read from oom_control */
	OOMTRAIL_F_HAS_TASK = 1 << 1,        /* victim fields read from its task_struct */
	OOMTRAIL_F_HAS_TP_FIELDS = 1 << 2,   /* victim fields read from the tracepoint record (>= 6.8) */
	OOMTRAIL_F_HAS_MEMCG = 1 << 3,       /* memcg_limit/usage valid */
	OOMTRAIL_F_CONSTRAINT_INFERRED = 1 << 4,
	OOMTRAIL_F_VICTIM_CG_VALID = 1 << 5,
	OOMTRAIL_F_OOM_CG_VALID = 1 << 6,
	OOMTRAIL_F_TASK_FROM_SIGNAL = 1 << 7, /* victim task taken from the SIGKILL just sent (pid-only mark_victim) */
	OOMTRAIL_F_RSS_INEXACT = 1 << 8,      /* the kernel prints per-CPU sums (7.0+) that could not be read: global counts */
	/* header only (OOMTRAIL_EVENT_HEADER_SIZE bytes): both cgroups are those of the last full event the kernel side
	 * submitted, which had these victim_cg_id/oom_cg_id (a memory.oom.group sweep's members after the first) */
	OOMTRAIL_F_CG_AS_BEFORE = 1 << 9,
};

/* mak_flags: which parts of memory_at_kill the kernel side could read from the OOM memcg */
enum oomtrail_mak_flags {
	OOMTRAIL_MAK_COUNTERS = 1 << 0,  /* mak_usage/limit/failcnt (page_counter memory) */
	OOMTRAIL_MAK_SWAP = 1 << 1,      /* mak_swap_*: v2 swap counter, v1 memory+swap (same union) */
	OOMTRAIL_MAK_KMEM = 1 << 2,      /* mak_kmem_usage_pages (v1 kmem counter) */
	OOMTRAIL_MAK_STATS = 1 << 3,     /* the vmstats items below */
	OOMTRAIL_MAK_COMPACTED = 1 << 4, /* stat array compacted (>= 6.10): items translated by rank */
	OOMTRAIL_MAK_UNMAPPED = 1 << 5,  /* compacted, but the rank list disagrees with this kernel's array */
};

struct oomtrail_cgroup_path {
	__u64 kn_id;
	__u32 depth;     /* valid entries in names[], leaf first */
	__u32 truncated; /* 1 when more ancestors existed than slots */
	char names[OOMTRAIL_CG_DEPTH][OOMTRAIL_CG_NAME_LEN];
};

struct oomtrail_event {
	__u64 boot_ns;          /* bpf_ktime_get_boot_ns() */
	__u64 total_vm_pages;
	__u64 anon_rss_pages;
	__u64 file_rss_pages;
	__u64 shmem_rss_pages;
	__u64 pgtables_bytes;
	__u64 gfp_mask;
	__u64 domain_pages;     /* oom_control.totalpages: the OOM domain, not the victim */
	__u64 memcg_limit_pages;
	__u64 memcg_usage_pages;
	__u32 victim_pid;       /* tgid */
	__u32 victim_tid;
	__u32 victim_uid;
	__u32 trigger_pid;
	__u32 trigger_tid;
	__s32 oom_score_adj;
	__s32 order;
	__u32 hook;
	__u32 constraint;
	__u32 flags;
	char victim_comm[OOMTRAIL_COMM_LEN];
	char trigger_comm[OOMTRAIL_COMM_LEN];
	/* the victim process (thread-group leader) in its own pid namespace; 0 when no task was read */
	__u32 victim_ns_pid;
	__u32 victim_ns_level;  /* that namespace's depth: 0 is the host's */
	__u32 oom_group_kill;   /* 1: a memory.oom.group at or above the victim's memcg (up to the OOM memcg) kills them all */
	__u32 ns_pad;           /* explicit: the u64s below stay 8-aligned in both C and event.ts */
	/* memory_at_kill: the OOM memcg at mark_victim, before the victim's memory is freed.
	 * Values are hierarchical and clamped at 0 as the kernel prints them; units in the names. */
	__u64 mak_usage_pages;
	__u64 mak_limit_pages;
	__u64 mak_failcnt;
	__u64 mak_swap_usage_pages;
	__u64 mak_swap_limit_pages;
	__u64 mak_kmem_usage_pages;
	__u64 mak_anon_pages;
	__u64 mak_file_pages;
	__u64 mak_shmem_pages;
	__u64 mak_file_mapped_pages;
	__u64 mak_file_dirty_pages;
	__u64 mak_file_writeback_pages;
	__u64 mak_slab_reclaimable_bytes;
	__u64 mak_slab_unreclaimable_bytes;
	__u64 mak_sock_pages;
	__u64 mak_kmem_pages;
	__u64 mak_pagetables_pages;
	__u64 mak_swap_pages;
	__u32 mak_stat_slots; /* length of the kernel's memcg stat array (diagnosis) */
	__u32 mak_flags;
	/* kernfs ids of the victim's memcg and of the OOM memcg (0: none read, or the root for a global OOM), in every
	 * event: an OOMTRAIL_F_CG_AS_BEFORE one names by them the paths it reuses */
	__u64 victim_cg_id;
	__u64 oom_cg_id;
	/* The two paths come last: an event flagged OOMTRAIL_F_CG_AS_BEFORE ends here (~0.3 kB instead of ~8.5 kB). */
	struct oomtrail_cgroup_path victim_cg;
	struct oomtrail_cgroup_path oom_cg;
};

#define OOMTRAIL_EVENT_HEADER_SIZE (__builtin_offsetof(struct oomtrail_event, victim_cg))

#endif
