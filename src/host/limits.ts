import fs from 'node:fs';

/**
 * RLIMIT_NOFILE of this process as /proc/self/limits prints it ("Max open files  <soft>  <hard>  files"),
 * read after Node has raised the soft limit to the hard one at start; Infinity for "unlimited", null when
 * the file cannot be read or parsed.
 */
export function openFilesLimit(text?: string): { soft: number; hard: number } | null {
  let t = text;
  if (t === undefined) {
    try {
      t = fs.readFileSync('/proc/self/limits', 'latin1');
    } catch {
      return null;
    }
  }
  const m = /^Max open files[ \t]+(\d+|unlimited)[ \t]+(\d+|unlimited)[ \t]+files[ \t]*$/m.exec(t);
  if (!m) return null;
  const n = (s: string) => (s === 'unlimited' ? Infinity : Number(s));
  return { soft: n(m[1]), hard: n(m[2]) };
}

/** Descriptors always left to the rest of the agent, at least: spool segments and acks, ledger, lock, sinks'
 *  sockets, journald's pipes, BPF objects, runtime sockets, metrics connections, transient reads. */
export const MIN_FD_RESERVE = 1024;

/**
 * The descriptors the trail may keep open: at most `cap`, and never more than the soft limit less a
 * reserve of max(MIN_FD_RESERVE, half the limit), so every other open of the agent has at least that
 * many left however many cgroups the host has. Unknown limit: the kernel default soft limit (1024).
 */
export function trailFdBudget(cap: number, soft: number | null): { budget: number; reserve: number; limit: number } {
  const limit = soft === null ? 1024 : soft;
  if (limit === Infinity) return { budget: cap, reserve: Infinity, limit };
  const reserve = Math.max(MIN_FD_RESERVE, Math.ceil(limit / 2));
  return { budget: Math.max(0, Math.min(cap, limit - reserve)), reserve, limit };
}
