import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';

/**
 * Why an attach failed, named from the kernel's errno and what this process can see, for `oomtrail check` and the
 * start-up log. An errno alone misleads: under the packaged unit a kprobe gets EACCES from perf_event_open where
 * Debian's perf_event_paranoid=3 refuses it, on a kernel that has kprobes.
 */

/** How a program is attached: fentry, tp_btf and raw_tp through bpf() alone; kprobe and tracepoint through perf_event_open. */
export type AttachKind = 'fentry' | 'kprobe' | 'tp_btf' | 'tracepoint' | 'raw_tp';

export interface AttachFacts {
  /** /proc/sys/kernel/perf_event_paranoid; null: unreadable */
  paranoid: number | null;
  /** effective capabilities of this process */
  caps: { sysAdmin: boolean; perfmon: boolean; dacReadSearch: boolean };
  /** the kprobe PMU (/sys/bus/event_source/devices/kprobe, CONFIG_KPROBE_EVENTS): sysfs, readable without privileges */
  kprobePmu: boolean;
  /** where tracefs is mounted; 'unreadable': mounted where this process cannot look (root-only, 0700) */
  tracefs: string | 'unreadable' | null;
  /** kprobe_events in tracefs; null: tracefs not readable or not mounted, so not known */
  kprobeEvents: boolean | null;
}

/** Where tracefs is mounted, the usual place first (the one `ensureTracefs` mounts when neither is). */
export const TRACEFS = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];
const KPROBE_PMU = '/sys/bus/event_source/devices/kprobe';

/** CapEff bits (linux/capability.h). */
const CAP_DAC_READ_SEARCH = 2n;
const CAP_SYS_ADMIN = 21n;
const CAP_PERFMON = 38n;

export function parseCapEff(status: string): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m ? BigInt('0x' + m[1]) : 0n;
}

/**
 * stat(), not access(): access() (fs.existsSync) checks with the real uid and, for a non-root uid, without the
 * process's capabilities, so under the unit (uid != 0, CAP_DAC_READ_SEARCH) it calls tracefs files missing that
 * open() reads.
 */
export function pathExists(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Where tracefs is, told apart from "mounted but root-only" (stat gives EACCES, not ENOENT). */
export function tracefsAccess(): string | 'unreadable' | null {
  let unreadable = false;
  for (const dir of TRACEFS) {
    try {
      statSync(path.join(dir, 'events'));
      return dir;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EACCES') unreadable = true;
    }
  }
  return unreadable ? 'unreadable' : null;
}

export function readAttachFacts(): AttachFacts {
  let paranoid: number | null = null;
  try {
    const v = Number(readFileSync('/proc/sys/kernel/perf_event_paranoid', 'utf8').trim());
    paranoid = Number.isInteger(v) ? v : null;
  } catch {
    /* no perf events in this kernel, or /proc/sys hidden */
  }
  let eff = 0n;
  try {
    eff = parseCapEff(readFileSync('/proc/self/status', 'utf8'));
  } catch {
    /* unknown: taken as none */
  }
  const has = (bit: bigint) => ((eff >> bit) & 1n) === 1n;
  const tracefs = tracefsAccess();
  return {
    paranoid,
    caps: { sysAdmin: has(CAP_SYS_ADMIN), perfmon: has(CAP_PERFMON), dacReadSearch: has(CAP_DAC_READ_SEARCH) },
    kprobePmu: pathExists(KPROBE_PMU),
    tracefs,
    kprobeEvents: tracefs && tracefs !== 'unreadable' ? pathExists(path.join(tracefs, 'kprobe_events')) : null,
  };
}

/** Does this kernel have kprobes, as far as this process can tell (null: cannot tell). */
export function kprobesPresent(f: AttachFacts): boolean | null {
  if (f.kprobePmu || f.kprobeEvents === true) return true;
  return f.kprobeEvents === false ? false : null;
}

const NO_PERF_EVENT = 'fentry, tp_btf and raw tracepoints need no perf_event_open and are used instead where they load';

/**
 * One line: what failed, why, what to do; null when the errno says nothing more than itself.
 * `libbpfLog` tells which step of a perf-event attach failed (the tracefs id read or perf_event_open).
 */
export function attachCause(kind: AttachKind, code: string, f: AttachFacts, libbpfLog: readonly string[] = []): string | null {
  const said = (re: RegExp) => libbpfLog.some((l) => re.test(l));
  const perfEvent = kind === 'kprobe' || kind === 'tracepoint';
  const paranoid = f.paranoid === null ? 'unknown' : String(f.paranoid);
  if (perfEvent && (code === 'EACCES' || code === 'EPERM')) {
    if (said(/failed to determine tracepoint .* perf event ID/)) {
      return `${kind}: tracepoint id not readable in tracefs (${code}): tracefs is root-only; needs root or CAP_DAC_READ_SEARCH`;
    }
    if (said(/failed to add legacy kprobe event|failed to determine legacy kprobe event id/)) {
      return `${kind}: no kprobe PMU, and the legacy kprobe_events in tracefs could not be opened (${code}: tracefs is root-only, kprobe_events root-writable): needs root`;
    }
    if (f.paranoid !== null && f.paranoid >= 3 && !f.caps.sysAdmin) {
      return (
        `${kind}: perf_event_open refused (${code}): kernel.perf_event_paranoid=${paranoid} (a Debian/Ubuntu kernel patch) ` +
        `denies perf events to processes without CAP_SYS_ADMIN, even with CAP_PERFMON; ${NO_PERF_EVENT}; ` +
        `to allow ${kind === 'kprobe' ? 'kprobes' : 'classic tracepoints'}: sysctl kernel.perf_event_paranoid=2`
      );
    }
    if (f.paranoid !== null && f.paranoid >= 2 && !f.caps.perfmon && !f.caps.sysAdmin) {
      return `${kind}: perf_event_open refused (${code}): kernel.perf_event_paranoid=${paranoid} needs CAP_PERFMON (or CAP_SYS_ADMIN) for kernel events; this process has neither`;
    }
    return `${kind}: perf_event_open refused (${code}) with kernel.perf_event_paranoid=${paranoid}${f.caps.perfmon ? ' and CAP_PERFMON' : ''}: a security module (SELinux, AppArmor) or a seccomp filter may refuse it`;
  }
  if (kind === 'kprobe' && code === 'ENOENT') {
    const present = kprobesPresent(f);
    if (present === false) return 'kprobe: kernel built without kprobes (no kprobe PMU in /sys/bus/event_source/devices, no kprobe_events in tracefs: CONFIG_KPROBES or CONFIG_KPROBE_EVENTS off)';
    if (present === null) return `kprobe: no kprobe PMU in /sys/bus/event_source/devices, and kprobe_events cannot be checked (tracefs ${f.tracefs === 'unreadable' ? 'not readable here' : 'not mounted'})`;
    return 'kprobe: oom_kill_process cannot be probed (ENOENT: not a symbol of this kernel, or on its kprobe blacklist)';
  }
  if (kind === 'tracepoint' && code === 'ENOENT') {
    if (f.tracefs === null) return 'tracepoint: tracefs not mounted: libbpf reads the tracepoint id there (mount -t tracefs nodev /sys/kernel/tracing)';
    if (f.tracefs === 'unreadable') return null;
    return 'tracepoint: not in tracefs (this kernel does not have it)';
  }
  if ((kind === 'raw_tp' || kind === 'tp_btf') && code === 'ENOENT') return `${kind}: this kernel does not have the tracepoint`;
  return null;
}
