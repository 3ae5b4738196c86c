/* Helpers shared by the per-cgroup collectors (BPF side only; include after vmlinux.h and libbpf's headers). */
#ifndef OOMTRAIL_MEMCG_BPF_H
#define OOMTRAIL_MEMCG_BPF_H

/* The kernfs id of the current task's memory cgroup: the key of every per-cgroup map (user space
 * finds it as the inode number of the cgroup's directory). 0 when the task has none. */
static __always_inline __u64 current_memcg_id(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct css_set *cgroups = BPF_CORE_READ(task, cgroups);
	struct cgroup_subsys_state *css = NULL;

	if (!cgroups)
		return 0;
	bpf_core_read(&css, sizeof(css), &cgroups->subsys[id]);
	if (!css)
		return 0;
	return BPF_CORE_READ(css, cgroup, kn, id);
}

#endif
