import { existsSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { BpfObject } from '../../bpf/object';
import { BpfError } from '../../bpf/errors';
import { bpfObjectPath } from '../../bpf/objects';
import { HOOK_ORDER, type Hook } from '../../record/record';
import { attachCause, pathExists, readAttachFacts, TRACEFS, tracefsAccess, type AttachFacts } from '../../bpf/attach-cause';

export const OBJECT_PATH = bpfObjectPath('oomkill');

export const PROGRAMS: Record<Hook, string> = {
  fentry: 'fentry_oom_kill_process',
  kprobe: 'kprobe_oom_kill_process',
  tp_btf: 'tp_btf_mark_victim',
  tracepoint: 'tracepoint_mark_victim',
};

/**
 * Companions of a pid-only mark_victim (kernels before 6.8, and the tracepoint hook everywhere):
 * they remember whom the OOM killer just sent SIGKILL to, so every member of a group kill is
 * recorded from its task (sizes, uid, cgroup). Tried in the order that suits the victim hook.
 */
export const SIGNAL_PROGRAMS = ['tp_btf_signal_generate', 'raw_tp_signal_generate'] as const;
export type SignalProgram = (typeof SIGNAL_PROGRAMS)[number];
export const ALL_PROGRAMS: readonly string[] = [...Object.values(PROGRAMS), ...SIGNAL_PROGRAMS];

/** fentry/kprobe only read oom_control; every victim is emitted from a mark_victim program. */
export const CONTEXT_HOOKS: readonly Hook[] = ['fentry', 'kprobe'];
export const VICTIM_HOOKS: readonly Hook[] = ['tp_btf', 'tracepoint'];

export interface HookProbe {
  hook: Hook;
  ok: boolean;
  reason?: string;
}

export interface CompanionProbe {
  program: SignalProgram;
  ok: boolean;
  reason?: string;
}

/**
 * libbpf resolves classic tracepoints through tracefs; mount it if the host did not. Looked up with stat():
 * existsSync (access()) drops the capabilities of a non-root uid and called tracefs "not mounted" under the unit.
 */
export function ensureTracefs(): string | null {
  const found = tracefsAccess();
  if (found === 'unreadable') return null; // mounted, root-only: nothing to mount
  if (found) return found;
  try {
    execFileSync('mount', ['-t', 'tracefs', 'nodev', TRACEFS[0]], { stdio: 'ignore' });
    return pathExists(path.join(TRACEFS[0], 'events')) ? TRACEFS[0] : null;
  } catch {
    return null;
  }
}

function readTrim(file: string): string | null {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Turns the kernel's errno into the reason an operator can act on. */
export function explain(hook: Hook, err: unknown, libbpfLog: string[], facts: () => AttachFacts = readAttachFacts): string {
  const base = err instanceof BpfError ? err.message : String(err);
  const hints: string[] = [];
  const code = err instanceof BpfError ? err.code : '';
  if (!existsSync('/sys/kernel/btf/vmlinux')) hints.push('kernel has no BTF (/sys/kernel/btf/vmlinux missing; CONFIG_DEBUG_INFO_BTF=y needed)');
  // an attach's errno, read with what this process can see (perf_event_paranoid, capabilities, the kprobe PMU):
  // EACCES from perf_event_open on a kernel with kprobes is not "no kprobes"
  const attachFailed = err instanceof BpfError && err.op === 'bpf_program__attach';
  const cause = attachFailed ? attachCause(hook, code, facts(), libbpfLog) : null;
  if (cause) hints.push(cause);
  if (hook === 'fentry' && code === 'EPERM') {
    const lockdown = readTrim('/sys/kernel/security/lockdown');
    const mode = lockdown?.match(/\[(\w+)\]/)?.[1];
    hints.push(
      mode && mode !== 'none'
        ? `kernel refuses fentry programs (lockdown=${mode})`
        : 'kernel refuses fentry programs (EPERM: BPF trampolines unavailable or not permitted)',
    );
  }
  if (hook === 'fentry' && code === 'ENOTSUPP') hints.push('kernel cannot attach fentry to this function (no BPF trampoline: e.g. arm64 without ftrace direct calls)');
  if (code === 'EPERM' && hook !== 'fentry' && !cause) hints.push('missing CAP_BPF/CAP_PERFMON (or root)');
  const lastLog = failureLine(libbpfLog);
  // libbpf's inner line says which step of a perf-event attach failed (tracefs id or perf_event_open)
  const inner = libbpfLog.find((l) => /perf_event_open\(\) failed|failed to determine (tracepoint|legacy kprobe)|failed to add legacy kprobe/.test(l));
  return [base, ...hints, ...(inner && inner !== lastLog ? [inner] : []), ...(lastLog ? [lastLog] : [])].join('; ');
}

/** The libbpf line that says why a load failed: a program-specific one says more than the closing "failed to load object". */
function failureLine(libbpfLog: string[]): string | undefined {
  const failures = libbpfLog.filter((l) => /error|fail|invalid|denied|not supported/i.test(l) && !/failed to load object/.test(l));
  return failures.find((l) => /^libbpf: prog '/.test(l)) ?? failures.slice(-1)[0];
}

/**
 * Loads and attaches each hook's program alone and detaches again: tells which hooks this
 * kernel offers, each failure with the kernel's reason.
 */
export function probeHooks(withLibbpfLog: <T>(fn: (log: string[]) => T) => T, objectPath = OBJECT_PATH): HookProbe[] {
  ensureTracefs();
  return HOOK_ORDER.map((hook) => probeHook(withLibbpfLog, hook, objectPath));
}

/** One hook's program alone: loads, attaches, detaches. */
export function probeHook(withLibbpfLog: <T>(fn: (log: string[]) => T) => T, hook: Hook, objectPath = OBJECT_PATH): HookProbe {
  return withLibbpfLog((log) => {
    try {
      tryLoadAttach(objectPath, PROGRAMS[hook]);
      return { hook, ok: true };
    } catch (err) {
      return { hook, ok: false, reason: explain(hook, err, log) };
    }
  });
}

/** Opens the object with only `programs` to load, loads and attaches them; closed again on failure. */
export function loadAndAttach(objectPath: string, programs: readonly string[], ringBytes?: number): BpfObject {
  const obj = BpfObject.open(objectPath, programs, ALL_PROGRAMS, ringBytes ? { events: ringBytes } : {});
  try {
    obj.load();
    for (const prog of programs) obj.attach(prog);
    return obj;
  } catch (err) {
    obj.close();
    throw err;
  }
}

function tryLoadAttach(objectPath: string, program: string): void {
  loadAndAttach(objectPath, [program]).close();
}

/** Loads and attaches each signal companion alone: which of them this kernel takes. */
export function probeCompanions(withLibbpfLog: <T>(fn: (log: string[]) => T) => T, objectPath = OBJECT_PATH): CompanionProbe[] {
  return SIGNAL_PROGRAMS.map((program) =>
    withLibbpfLog((log) => {
      try {
        tryLoadAttach(objectPath, program);
        return { program, ok: true };
      } catch (err) {
        const base = err instanceof BpfError ? err.message : String(err);
        const last = failureLine(log);
        return { program, ok: false, reason: last ? `${base}; ${last}` : base };
      }
    }),
  );
}

/**
 * The programs to load for a hook: a context hook pairs with the first victim hook that works,
 * and the victim hook with the first signal companion that works (none: degraded, not fatal).
 */
export function planFor(hook: Hook, probes: HookProbe[], companions: CompanionProbe[] = []): string[] | null {
  const ok = (h: Hook) => probes.find((p) => p.hook === h)?.ok === true;
  if (!ok(hook)) return null;
  const victim = CONTEXT_HOOKS.includes(hook) ? VICTIM_HOOKS.find(ok) : hook;
  if (!victim) return null;
  const companion = companionOrder(victim).find((c) => companions.find((p) => p.program === c)?.ok === true);
  return [...(victim === hook ? [] : [PROGRAMS[hook]]), PROGRAMS[victim], ...(companion ? [companion] : [])];
}

/** The classic tracepoint hook stays off BTF-typed attachment where it can. */
export function companionOrder(victimHook: Hook): SignalProgram[] {
  return victimHook === 'tracepoint' ? ['raw_tp_signal_generate', 'tp_btf_signal_generate'] : [...SIGNAL_PROGRAMS];
}

/** The victim hook of a plan (its mark_victim program). */
export function victimHookOf(plan: string[]): Hook {
  return plan.includes(PROGRAMS.tp_btf) ? 'tp_btf' : 'tracepoint';
}

/** A companion is needed where mark_victim does not hand over the task: before 6.8, and the classic tracepoint. */
export function companionNeeded(victimHook: Hook, tracefs: string | null): boolean {
  return needsCompanion(victimHook, markVictimCarriesTask(tracefs));
}

function needsCompanion(victimHook: Hook, carriesTask: boolean | null): boolean {
  return victimHook === 'tracepoint' || carriesTask !== true;
}

/** What this kernel's mark_victim tracepoint carries, read from its tracefs format (a feature check). */
export function markVictimCarriesTask(tracefs: string | null = ensureTracefs()): boolean | null {
  if (!tracefs) return null;
  const format = readTrim(path.join(tracefs, 'events/oom/mark_victim/format'));
  if (format === null) return null;
  return /\btotal_vm\b/.test(format);
}

/**
 * Features this kernel lacks and what each costs the records, in words for `check` and the log.
 * Feature checks only: tracefs formats and what loaded, never version numbers.
 */
export function degradations(selected: Hook | null, plan: string[] | null, probes: HookProbe[], companions: CompanionProbe[], tracefs: string | null): string[] {
  const out: string[] = [];
  if (!selected || !plan) return out;
  const carriesTask = markVictimCarriesTask(tracefs);
  const victimHook = victimHookOf(plan);
  const companion = plan.find((p) => (SIGNAL_PROGRAMS as readonly string[]).includes(p));
  if (carriesTask === false) {
    out.push(
      'mark_victim carries only a pid (its task and sizes arrive with 6.8): the victim task is the one the OOM killer just sent SIGKILL to' +
        (companion ? ` (${companion})` : ''),
    );
  }
  if (needsCompanion(victimHook, carriesTask) && !companion) {
    const why = companions.map((c) => `${c.program}: ${c.reason ?? 'unavailable'}`).join(' | ');
    out.push(`no signal companion loads (${why}): group-kill members other than the chosen victim are recorded with pid only`);
  }
  if (!CONTEXT_HOOKS.includes(selected)) {
    const fentry = probes.find((p) => p.hook === 'fentry');
    const kprobe = probes.find((p) => p.hook === 'kprobe');
    if (fentry && !fentry.ok && kprobe && !kprobe.ok) {
      out.push('no oom_kill_process hook (fentry and kprobe unavailable): constraint and OOM cgroup inferred; gfp_mask, order and domain_pages unknown');
    }
  }
  return out;
}
