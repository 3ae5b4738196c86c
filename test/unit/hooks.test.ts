/*
 * Which programs a hook loads, and what `check` says a kernel lacks: pure decisions over probe
 * results and the mark_victim tracepoint's format (a feature check, never a version number).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { companionNeeded, degradations, markVictimCarriesTask, planFor, type CompanionProbe, type HookProbe } from '../../src/collectors/oomkill/hooks';

const probes = (ok: Record<string, boolean>): HookProbe[] =>
  (['fentry', 'kprobe', 'tp_btf', 'tracepoint'] as const).map((hook) => ({ hook, ok: ok[hook] ?? false, reason: ok[hook] ? undefined : `${hook} refused` }));
const companions = (ok: Record<string, boolean>): CompanionProbe[] =>
  (['tp_btf_signal_generate', 'raw_tp_signal_generate'] as const).map((program) => ({ program, ok: ok[program] ?? false, reason: ok[program] ? undefined : 'EINVAL' }));

/** A tracefs directory whose mark_victim format is the pid-only one (before 6.8) or the full one. */
function tracefsWith(fields: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-tracefs-'));
  fs.mkdirSync(path.join(dir, 'events/oom/mark_victim'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'events/oom/mark_victim/format'), `name: mark_victim\nformat:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n${fields}`);
  return dir;
}
const PID_ONLY = tracefsWith('');
const FULL = tracefsWith('\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;\n');

test('planFor: a context hook pairs with the first victim hook that works, then a companion', () => {
  const all = probes({ fentry: true, kprobe: true, tp_btf: true, tracepoint: true });
  assert.deepEqual(planFor('fentry', all), ['fentry_oom_kill_process', 'tp_btf_mark_victim']);
  assert.deepEqual(planFor('kprobe', probes({ kprobe: true, tracepoint: true })), ['kprobe_oom_kill_process', 'tracepoint_mark_victim']);
  assert.deepEqual(planFor('tp_btf', all, companions({ tp_btf_signal_generate: true, raw_tp_signal_generate: true })), ['tp_btf_mark_victim', 'tp_btf_signal_generate']);
  // the classic tracepoint hook prefers the raw tracepoint companion
  assert.deepEqual(planFor('tracepoint', all, companions({ tp_btf_signal_generate: true, raw_tp_signal_generate: true })), ['tracepoint_mark_victim', 'raw_tp_signal_generate']);
  assert.deepEqual(planFor('tracepoint', all, companions({ tp_btf_signal_generate: true })), ['tracepoint_mark_victim', 'tp_btf_signal_generate']);
  assert.equal(planFor('fentry', probes({ fentry: true })), null, 'no victim hook: nothing to emit records');
  assert.equal(planFor('kprobe', probes({ tp_btf: true })), null, 'the hook itself refused');
});

test('the mark_victim format tells whether the tracepoint hands over the task', () => {
  assert.equal(markVictimCarriesTask(PID_ONLY), false);
  assert.equal(markVictimCarriesTask(FULL), true);
  assert.equal(markVictimCarriesTask(path.join(PID_ONLY, 'nope')), null);
  assert.equal(companionNeeded('tp_btf', FULL), false);
  assert.equal(companionNeeded('tracepoint', FULL), true, 'the classic tracepoint never gets the task');
  assert.equal(companionNeeded('tp_btf', PID_ONLY), true);
});

test('degradations: named with their cost, nothing on a kernel that lacks nothing', () => {
  const all = probes({ fentry: true, kprobe: true, tp_btf: true, tracepoint: true });
  assert.deepEqual(degradations('fentry', ['fentry_oom_kill_process', 'tp_btf_mark_victim'], all, [], FULL), []);
  const old = degradations('tp_btf', ['tp_btf_mark_victim', 'tp_btf_signal_generate'], probes({ tp_btf: true, tracepoint: true }), [], PID_ONLY);
  assert.equal(old.length, 2, old.join('\n'));
  assert.match(old[0], /mark_victim carries only a pid .*6\.8.*tp_btf_signal_generate/);
  assert.match(old[1], /no oom_kill_process hook .*constraint and OOM cgroup inferred/);
  const noCompanion = degradations('tracepoint', ['tracepoint_mark_victim'], all, companions({}), FULL);
  assert.equal(noCompanion.length, 1);
  assert.match(noCompanion[0], /no signal companion loads \(tp_btf_signal_generate: EINVAL \| raw_tp_signal_generate: EINVAL\): group-kill members .* pid only/);
  assert.deepEqual(degradations(null, null, all, [], PID_ONLY), [], 'no hook: the failure is reported elsewhere');
});
