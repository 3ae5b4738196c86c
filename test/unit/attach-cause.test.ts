/*
 * Why an attach failed, in one line: the kernel's errno read with perf_event_paranoid, this process's
 * capabilities and the kprobe PMU. The first case is what the packaged unit saw on Debian 11 and 12
 * (package VM test, oomtrail check in the journal): EACCES from perf_event_open on kernels with kprobes,
 * which the old code reported as "kernel built without kprobes".
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attachCause, kprobesPresent, parseCapEff, type AttachFacts } from '../../src/bpf/attach-cause';
import { explain } from '../../src/collectors/oomkill/hooks';
import { BpfError } from '../../src/bpf/errors';

/** The packaged unit on Debian 12: uid != 0, CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH CAP_SYSLOG, paranoid 3. */
const debianUnit: AttachFacts = {
  paranoid: 3,
  caps: { sysAdmin: false, perfmon: true, dacReadSearch: true },
  kprobePmu: true,
  tracefs: 'unreadable',
  kprobeEvents: null,
};
const KPROBE_LOG = ["libbpf: prog 'kprobe_oom_kill_process': failed to create kprobe 'oom_kill_process+0x0' perf event: Permission denied"];

test('kprobe EACCES under paranoid 3 without CAP_SYS_ADMIN: perf_event_paranoid named, not "no kprobes"', () => {
  const line = attachCause('kprobe', 'EACCES', debianUnit, KPROBE_LOG)!;
  assert.match(line, /^kprobe: perf_event_open refused \(EACCES\): kernel\.perf_event_paranoid=3 /);
  assert.match(line, /without CAP_SYS_ADMIN, even with CAP_PERFMON/);
  assert.match(line, /fentry, tp_btf and raw tracepoints need no perf_event_open/);
  assert.match(line, /sysctl kernel\.perf_event_paranoid=2/);
  assert.doesNotMatch(line, /without kprobes/);
  // and explain(), as check and run use it, says the same and no longer blames the kernel
  const reason = explain('kprobe', new BpfError('bpf_program__attach', 13, 'kprobe_oom_kill_process'), KPROBE_LOG, () => debianUnit);
  assert.match(reason, /^bpf_program__attach failed: EACCES \(kprobe_oom_kill_process\); kprobe: perf_event_open refused \(EACCES\): kernel\.perf_event_paranoid=3/);
  assert.doesNotMatch(reason, /without kprobes|CONFIG_KPROBES/);
});

test('classic tracepoint EACCES: perf_event_open (paranoid) told apart from the tracefs id read (libbpf says which step)', () => {
  const open = ["libbpf: tracepoint 'oom/mark_victim' perf_event_open() failed: Permission denied"];
  assert.match(attachCause('tracepoint', 'EACCES', debianUnit, open)!, /^tracepoint: perf_event_open refused \(EACCES\): kernel\.perf_event_paranoid=3 .*to allow classic tracepoints/);
  const id = ["libbpf: failed to determine tracepoint 'oom/mark_victim' perf event ID: Permission denied"];
  assert.equal(
    attachCause('tracepoint', 'EACCES', { ...debianUnit, paranoid: 2 }, id),
    'tracepoint: tracepoint id not readable in tracefs (EACCES): tracefs is root-only; needs root or CAP_DAC_READ_SEARCH',
  );
  // the inner line reaches the reason (the prog line alone does not say which step)
  const reason = explain('tracepoint', new BpfError('bpf_program__attach', 13, 'tracepoint_mark_victim'), [...id, "libbpf: prog 'tracepoint_mark_victim': failed to create tracepoint 'oom/mark_victim' perf event: Permission denied"], () => debianUnit);
  assert.match(reason, /tracepoint id not readable in tracefs/);
  assert.match(reason, /failed to determine tracepoint 'oom\/mark_victim' perf event ID/);
});

test('EACCES with paranoid <= 2: missing CAP_PERFMON, or (with it) a security module; root is never blamed on paranoid', () => {
  const noPerfmon = { ...debianUnit, paranoid: 2, caps: { sysAdmin: false, perfmon: false, dacReadSearch: false } };
  assert.match(attachCause('kprobe', 'EACCES', noPerfmon)!, /paranoid=2 needs CAP_PERFMON \(or CAP_SYS_ADMIN\).*has neither/);
  assert.match(attachCause('kprobe', 'EACCES', { ...debianUnit, paranoid: 2 })!, /paranoid=2 and CAP_PERFMON: a security module/);
  const root = { ...debianUnit, caps: { sysAdmin: true, perfmon: true, dacReadSearch: true } };
  assert.doesNotMatch(attachCause('kprobe', 'EACCES', root)!, /without CAP_SYS_ADMIN/);
});

test('kprobe ENOENT: no kprobes only when neither the PMU nor kprobe_events exists; unknown when tracefs is not readable', () => {
  const none: AttachFacts = { ...debianUnit, paranoid: 2, kprobePmu: false, tracefs: '/sys/kernel/tracing', kprobeEvents: false };
  assert.match(attachCause('kprobe', 'ENOENT', none)!, /^kprobe: kernel built without kprobes \(no kprobe PMU .*CONFIG_KPROBES or CONFIG_KPROBE_EVENTS off\)/);
  assert.equal(kprobesPresent(none), false);
  const hidden: AttachFacts = { ...none, tracefs: 'unreadable', kprobeEvents: null };
  assert.match(attachCause('kprobe', 'ENOENT', hidden)!, /kprobe_events cannot be checked \(tracefs not readable here\)/);
  assert.equal(kprobesPresent(hidden), null);
  assert.match(attachCause('kprobe', 'ENOENT', debianUnit)!, /oom_kill_process cannot be probed/);
  assert.equal(kprobesPresent(debianUnit), true);
  // the legacy path (no PMU) writes kprobe_events: refused there is not perf_event_paranoid
  const legacy = ["libbpf: failed to add legacy kprobe event for 'oom_kill_process+0x0': -13"];
  assert.match(attachCause('kprobe', 'EACCES', hidden, legacy)!, /no kprobe PMU, and the legacy kprobe_events in tracefs could not be opened \(EACCES/);
});

test('load failures keep their own hints (only an attach errno is mapped); bpf()-only kinds are never blamed on perf events', () => {
  const load = explain('kprobe', new BpfError('bpf_object__load', 1), [], () => debianUnit);
  assert.match(load, /missing CAP_BPF\/CAP_PERFMON/);
  assert.doesNotMatch(load, /perf_event_paranoid/);
  assert.equal(attachCause('raw_tp', 'EACCES', debianUnit), null);
  assert.equal(attachCause('tp_btf', 'ENOENT', debianUnit), 'tp_btf: this kernel does not have the tracepoint');
});

test('CapEff parsed from /proc/self/status', () => {
  // CAP_DAC_READ_SEARCH (2), CAP_SYSLOG (34), CAP_PERFMON (38), CAP_BPF (39): the unit's set
  const eff = parseCapEff('Name:\tnode\nCapInh:\t000000c400000004\nCapEff:\t000000c400000004\n');
  assert.equal(eff, (1n << 2n) | (1n << 34n) | (1n << 38n) | (1n << 39n));
  assert.equal(parseCapEff('Name:\tx\n'), 0n);
});
