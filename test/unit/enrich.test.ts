import { test } from 'node:test';
import assert from 'node:assert/strict';
import { enrich, enrichPressure } from '../../src/pipeline/assemble/enrich';
import { formatRfc3339Nanos } from '../../src/host/clock';
import type { HostFacts } from '../../src/host/facts';
import type { RawOomEvent } from '../../src/collectors/oomkill/event';
import { deriveEventId } from '../../src/record/record';

const facts: HostFacts = { host: 'h1', bootId: 'b-1', kernelRelease: '6.18.0', pageSize: 4096, cgroupVersion: 2, agentVersion: '9.9.9' };

function raw(over: Partial<RawOomEvent> = {}): RawOomEvent {
  return {
    bootNs: 5_000_000_123n,
    totalVmPages: 1000,
    anonRssPages: 500,
    fileRssPages: 10,
    shmemRssPages: 0,
    pgtablesBytes: 188416,
    gfpMask: 0x140cca,
    order: 0,
    domainPages: 16384,
    memcgLimitPages: 16384,
    memcgUsagePages: 16380,
    victimPid: 42,
    victimTid: 43,
    victimUid: 1000,
    triggerPid: 7,
    triggerTid: 7,
    oomScoreAdj: 100,
    hook: 'fentry',
    constraint: 'memcg',
    constraintInferred: false,
    victimComm: 'java',
    triggerComm: 'java',
    victimCgroup: { id: 1n, path: '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_0000_1111_2222_333344445555.slice/cri-containerd-' + 'a'.repeat(64) + '.scope', truncated: false },
    oomCgroup: { id: 2n, path: '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_0000_1111_2222_333344445555.slice', truncated: false },
    ...over,
  };
}

test('RFC 3339 with nanoseconds, UTC', () => {
  assert.equal(formatRfc3339Nanos(1_700_000_000_000_000_001n), '2023-11-14T22:13:20.000000001Z');
  assert.equal(formatRfc3339Nanos(0n), '1970-01-01T00:00:00.000000000Z');
});

test('record fields: sizes in kB from pages, pgtables from bytes, domain kept apart from the victim', () => {
  const r = enrich(raw(), facts, (b) => b + 1_700_000_000_000_000_000n);
  assert.equal(r.victim_total_vm_kb, 4000);
  assert.equal(r.victim_anon_rss_kb, 2000);
  assert.equal(r.victim_pgtables_kb, 184);
  assert.equal(r.domain_pages, 16384);
  assert.equal(r.memcg_limit_bytes, 16384 * 4096);
  assert.equal(r.gfp_mask, '0x140cca');
  assert.equal(r.time, '2023-11-14T22:13:25.000000123Z');
  assert.equal(r.event_id, deriveEventId('b-1', 5_000_000_123n, 42));
  assert.equal(r.container_runtime, 'containerd');
  assert.equal(r.container_id, 'a'.repeat(64));
  assert.equal(r.pod_uid, '1a2b3c4d-0000-1111-2222-333344445555');
  assert.equal(r.k8s_qos, 'burstable');
  assert.equal(r.cgroup_version, 2);
});

test('unknown victim sizes are null, never zero; unlimited memcg is null', () => {
  const r = enrich(raw({ totalVmPages: null, anonRssPages: null, fileRssPages: null, shmemRssPages: null, pgtablesBytes: null, memcgLimitPages: 2 ** 51, gfpMask: null, order: null, domainPages: null }), facts, (b) => b);
  assert.equal(r.victim_anon_rss_kb, null);
  assert.equal(r.victim_total_vm_kb, null);
  assert.equal(r.memcg_limit_bytes, null);
  assert.equal(r.gfp_mask, null);
});

test('event_id is deterministic and distinguishes victims of one OOM', () => {
  assert.equal(deriveEventId('b', 1n, 2), deriveEventId('b', 1n, 2));
  assert.notEqual(deriveEventId('b', 1n, 2), deriveEventId('b', 1n, 3));
  assert.notEqual(deriveEventId('b', 1n, 2), deriveEventId('c', 1n, 2));
});

test('container init vs child: ns pid 1 below the host namespace in a container cgroup is the init', () => {
  const tb = (b: bigint) => b;
  const init = enrich(raw({ victimNsPid: 1, victimNsLevel: 1 }), facts, tb);
  assert.equal(init.victim_ns_pid, 1);
  assert.equal(init.victim_is_container_init, true);
  const child = enrich(raw({ victimNsPid: 7, victimNsLevel: 1 }), facts, tb);
  assert.equal(child.victim_ns_pid, 7);
  assert.equal(child.victim_is_container_init, false);
  // PID 1 of a namespace outside any container cgroup (unshare --pid) is no container's init
  const bare = enrich(raw({ victimNsPid: 1, victimNsLevel: 1, victimCgroup: { id: 1n, path: '/user.slice/x.scope', truncated: false } }), facts, tb);
  assert.equal(bare.victim_is_container_init, false);
  // the host's own pid 1 is not a container's init even in a container-shaped cgroup
  assert.equal(enrich(raw({ victimNsPid: 1, victimNsLevel: 0 }), facts, tb).victim_is_container_init, false);
  // no task read: unknown, not false
  const none = enrich(raw(), facts, tb);
  assert.equal(none.victim_ns_pid, undefined);
  assert.equal(none.victim_is_container_init, undefined);
});

test('oom_group_kill: carried when the kernel side read the task, absent otherwise', () => {
  const tb = (b: bigint) => b;
  assert.equal(enrich(raw({ oomGroupKill: true }), facts, tb).oom_group_kill, true);
  assert.equal(enrich(raw({ oomGroupKill: false }), facts, tb).oom_group_kill, false);
  assert.equal('oom_group_kill' in enrich(raw({ oomGroupKill: null }), facts, tb), false);
});

test('oom_scope: from the OOM cgroup (not the victim\'s), system without a memcg limit', () => {
  const f = (ns: bigint) => ns;
  assert.equal(enrich(raw(), facts, f).oom_scope, 'pod', 'the limit was the pod cgroup\'s, the victim in a container');
  assert.equal(enrich(raw({ oomCgroup: raw().victimCgroup }), facts, f).oom_scope, 'container');
  assert.equal(enrich(raw({ oomCgroup: { id: 3n, path: '/kubepods.slice/kubepods-burstable.slice', truncated: false } }), facts, f).oom_scope, 'qos');
  assert.equal(enrich(raw({ oomCgroup: { id: 4n, path: '/kubepods.slice', truncated: false } }), facts, f).oom_scope, 'node');
  assert.equal(enrich(raw({ constraint: 'global', oomCgroup: { id: 1n, path: '/', truncated: false } }), facts, f).oom_scope, 'system');
  assert.equal(enrich(raw({ oomCgroup: { id: 5n, path: '/system.slice/x.service', truncated: false } }), facts, f).oom_scope, 'other');
  assert.equal('oom_scope' in enrich(raw({ oomCgroup: null }), facts, f), false, 'unknown: absent');
  const p = enrichPressure({ cgroup: '/kubepods/besteffort', bootNs: 1n, usageBytes: 1, limitBytes: 2, info: { reasons: ['usage'], usage_ratio: 0.5, psi_some_avg10: null, psi_full_avg10: null, reclaim_stall_ms: null } }, facts, f);
  assert.equal(p.oom_scope, 'qos');
});
