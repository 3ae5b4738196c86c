import { existsSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { BpfObject } from '../../bpf/object';
import { BpfError } from '../../bpf/errors';
import { HOOK_ORDER, type Hook } from '../../record/record';

export const OBJECT_PATH = path.resolve(__dirname, '../../../../bpf/oomkill.bpf.o');

export const PROGRAMS: Record<Hook, string> = {
  fentry: 'fentry_oom_kill_process',
  kprobe: 'kprobe_oom_kill_process',
  tp_btf: 'tp_btf_mark_victim',
  tracepoint: 'tracepoint_mark_victim',
};
export const ALL_PROGRAMS = Object.values(PROGRAMS);

/** fentry/kprobe only read oom_control; every victim is emitted from a mark_victim program. */
export const CONTEXT_HOOKS: readonly Hook[] = ['fentry', 'kprobe'];
export const VICTIM_HOOKS: readonly Hook[] = ['tp_btf', 'tracepoint'];

export interface HookProbe {
  hook: Hook;
  ok: boolean;
  reason?: string;
}

const TRACEFS = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];

/** libbpf resolves classic tracepoints through tracefs; mount it if the host did not. */
export function ensureTracefs(): string | null {
  for (const dir of TRACEFS) if (existsSync(path.join(dir, 'events'))) return dir;
  try {
    execFileSync('mount', ['-t', 'tracefs', 'nodev', TRACEFS[0]], { stdio: 'ignore' });
    return existsSync(path.join(TRACEFS[0], 'events')) ? TRACEFS[0] : null;
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
export function explain(hook: Hook, err: unknown, libbpfLog: string[]): string {
  const base = err instanceof BpfError ? err.message : String(err);
  const hints: string[] = [];
  const code = err instanceof BpfError ? err.code : '';
  if (!existsSync('/sys/kernel/btf/vmlinux')) hints.push('kernel has no BTF (/sys/kernel/btf/vmlinux missing; CONFIG_DEBUG_INFO_BTF=y needed)');
  if (hook === 'kprobe' && !TRACEFS.some((d) => existsSync(path.join(d, 'kprobe_events')))) {
    hints.push('kernel built without kprobes (no kprobe_events in tracefs; CONFIG_KPROBES off)');
  }
  if (hook === 'fentry' && code === 'EPERM') {
    const lockdown = readTrim('/sys/kernel/security/lockdown');
    const mode = lockdown?.match(/\[(\w+)\]/)?.[1];
    hints.push(
      mode && mode !== 'none'
        ? `kernel refuses fentry programs (lockdown=${mode})`
        : 'kernel refuses fentry programs (EPERM: BPF trampolines unavailable or not permitted)',
    );
  }
  if (hook === 'tracepoint' && !TRACEFS.some((d) => existsSync(path.join(d, 'events/oom/mark_victim')))) {
    hints.push('tracepoint oom/mark_victim not found in tracefs');
  }
  if (code === 'EPERM' && hook !== 'fentry') hints.push('missing CAP_BPF/CAP_PERFMON (or root)');
  // the program-specific line says more than libbpf's closing "failed to load object"
  const failures = libbpfLog.filter((l) => /error|fail|invalid|denied|not supported/i.test(l) && !/failed to load object/.test(l));
  const lastLog = failures.find((l) => /^libbpf: prog '/.test(l)) ?? failures.slice(-1)[0];
  return [base, ...hints, ...(lastLog ? [lastLog] : [])].join('; ');
}

/**
 * Loads and attaches each hook's program alone and detaches again: tells which hooks this
 * kernel offers, each failure with the kernel's reason.
 */
export function probeHooks(withLibbpfLog: <T>(fn: (log: string[]) => T) => T, objectPath = OBJECT_PATH): HookProbe[] {
  ensureTracefs();
  return HOOK_ORDER.map((hook) =>
    withLibbpfLog((log) => {
      let obj: BpfObject | null = null;
      try {
        obj = BpfObject.open(objectPath, [PROGRAMS[hook]], ALL_PROGRAMS);
        obj.load();
        obj.attach(PROGRAMS[hook]);
        return { hook, ok: true };
      } catch (err) {
        return { hook, ok: false, reason: explain(hook, err, log) };
      } finally {
        obj?.close();
      }
    }),
  );
}

/** The programs to load for a hook: a context hook pairs with the first victim hook that works. */
export function planFor(hook: Hook, probes: HookProbe[]): string[] | null {
  const ok = (h: Hook) => probes.find((p) => p.hook === h)?.ok === true;
  if (!ok(hook)) return null;
  if (!CONTEXT_HOOKS.includes(hook)) return [PROGRAMS[hook]];
  const victim = VICTIM_HOOKS.find(ok);
  return victim ? [PROGRAMS[hook], PROGRAMS[victim]] : null;
}
