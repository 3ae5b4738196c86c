/* Shared between bpf/reclaim.bpf.c and the decoder in src/collectors/reclaim/maps.ts.
 * Fixed-width fields only; user space reads these map values every interval. */
#ifndef OOMTRAIL_RECLAIM_H
#define OOMTRAIL_RECLAIM_H

/* Value of map `reclaim_by_cg`, key __u64 = kernfs id (== inode of the cgroup directory) of the
 * stalled task's memory cgroup. Counters only grow: user space takes differences per interval. */
struct oomtrail_reclaim_stat {
	__u64 direct_stall_ns;  /* time in vmscan direct reclaim (global pressure) */
	__u64 memcg_stall_ns;   /* time in memcg limit reclaim */
	__u64 direct_reclaimed; /* pages reclaimed by those passes */
	__u64 memcg_reclaimed;
	__u64 direct_count;     /* completed passes */
	__u64 memcg_count;
};

/* Value of map `victims`, key __u32 = victim tid (the pid mark_victim reports). */
struct oomtrail_victim_state {
	__u64 mark_ns;    /* bpf_ktime_get_boot_ns() at oom:mark_victim */
	__u64 exit_ns;    /* at sched:sched_process_exit of that task, 0 until then */
	__u64 reaped_ns;  /* at oom:finish_task_reaping (oom_reaper freed its memory), 0 if never */
	__u32 tgid;       /* 0 until exit is seen */
	__u32 _pad;
};

/* Value of map `usage_slots` (an mmapable array user space reads in place), index = the slot user
 * space gave the cgroup in map `slot_by_cg` (key __u64 kernfs id, value __u32 slot). Each pass of
 * the `memcg_usage` cgroup iterator fills in the slots of the cgroups it visits. */
struct oomtrail_memcg_usage {
	__u64 usage_pages; /* page_counter_read(&memcg->memory): memory.current / memory.usage_in_bytes in pages */
	__u64 visits;      /* iterator passes that found the cgroup alive: unchanged = removed */
};

#endif
