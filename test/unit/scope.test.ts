import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cgroupScope, MAX_SCOPE_PATH, oomScope } from '../../src/pipeline/assemble/scope';
import { describeScope } from '../../src/record/describe';
import type { OomRecord } from '../../src/record/record';

const C = '3e74d3fd9db4c9dd921ae05c2502fb984d0cde1b36e581b13f79c639da4518a1';
const UID = '3d274242-8ee0-11e9-a8a6-1e68d864ef1a';
const US = UID.replace(/-/g, '_');
const STATIC = '7a4d8c3b1e0f2a6b9c5d4e3f2a1b0c9d';

// [name, path, scope]; the same names serve cgroup v1 (memory controller) and v2
const CASES: Array<[string, string, string]> = [
  // cgroupfs driver
  ['cgroupfs container, burstable', `/kubepods/burstable/pod${UID}/${C}`, 'container'],
  ['cgroupfs container, guaranteed', `/kubepods/pod${UID}/${C}`, 'container'],
  ['cgroupfs container, besteffort, cri-o', `/kubepods/besteffort/pod${UID}/crio-${C}`, 'container'],
  ['cgroupfs pod, burstable', `/kubepods/burstable/pod${UID}`, 'pod'],
  ['cgroupfs pod, guaranteed', `/kubepods/pod${UID}`, 'pod'],
  ['cgroupfs static pod', `/kubepods/pod${STATIC}`, 'pod'],
  ['cgroupfs qos burstable', '/kubepods/burstable', 'qos'],
  ['cgroupfs qos besteffort', '/kubepods/besteffort/', 'qos'],
  ['cgroupfs node', '/kubepods', 'node'],
  ['cgroupfs under --cgroup-root', `/kubelet/kubepods/burstable/pod${UID}`, 'pod'],
  // systemd driver
  ['systemd container, containerd', `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${US}.slice/cri-containerd-${C}.scope`, 'container'],
  ['systemd container, docker', `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${US}.slice/docker-${C}.scope`, 'container'],
  ['systemd container, cri-o', `/kubepods.slice/kubepods-pod${US}.slice/crio-${C}.scope`, 'container'],
  ['systemd inside a container (sub-cgroup)', `/kubepods.slice/kubepods-pod${US}.slice/crio-${C}.scope/container`, 'container'],
  ['systemd pod, guaranteed', `/kubepods.slice/kubepods-pod${US}.slice`, 'pod'],
  ['systemd pod, burstable', `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${US}.slice`, 'pod'],
  ['systemd qos', '/kubepods.slice/kubepods-besteffort.slice', 'qos'],
  ['systemd node', '/kubepods.slice', 'node'],
  ['systemd under kubelet.slice prefix', `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice`, 'qos'],
  ['kind node in a docker container', `/system.slice/docker-${C}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod${US}.slice`, 'pod'],
  ['docker-desktop doubled kubepods', `/kubepods/kubepods/besteffort/pod${UID}/${C}`, 'container'],
  // not a level kubelet makes
  ['crio conmon under a pod', `/kubepods.slice/kubepods-pod${US}.slice/crio-conmon-${C}.scope`, 'other'],
  ['stray directory under kubepods', '/kubepods/stray', 'other'],
  ['stray directory under qos', '/kubepods/burstable/podnotauid', 'other'],
  ['pod outside kubepods', `/system.slice/pod${UID}/${C}`, 'other'],
  ['plain docker container', `/docker/${C}`, 'other'],
  ['systemd service', '/system.slice/nginx.service', 'other'],
  ['user slice', '/user.slice/user-1000.slice/session-3.scope', 'other'],
  // hostile names: each segment must be exactly a level's name
  ['dashed uid in a systemd pod slice', `/kubepods.slice/kubepods-pod${UID}.slice`, 'other'],
  ['upper-case qos', '/kubepods/Burstable', 'other'],
  ['qos name with a suffix', '/kubepods/burstable.x', 'other'],
  ['kubepods-looking prefix', '/kubepodsx/burstable', 'other'],
  ['kubepods with a space', '/kubepods /burstable', 'other'],
  ['newline inside a name', `/kubepods/burstable/pod${UID}\n/${C}`, 'other'],
  ['63-hex container id', `/kubepods/pod${UID}/${C.slice(1)}`, 'other'],
  ['container names a fake node inside itself', `/kubepods/burstable/pod${UID}/${C}/kubepods`, 'container'],
  ['container names a fake pod inside itself', `/kubepods/burstable/pod${UID}/${C}/kubepods/pod${UID}`, 'container'],
  ['stray names a fake qos', '/kubepods/stray/kubepods/burstable', 'other'],
  ['pod names a fake qos inside itself', `/kubepods/pod${UID}/kubepods/burstable`, 'other'],
  ['truncated path (deeper than 16 levels)', `/…/kubepods/burstable/pod${UID}/${C}`, 'container'],
  ['empty', '', 'other'],
  ['root', '/', 'other'],
];

for (const [name, path, want] of CASES) {
  test(`cgroupScope: ${name}`, () => {
    assert.equal(cgroupScope(path), want, path);
  });
}

test('cgroupScope: bounded: a path longer than PATH_MAX is not parsed; a long one is in linear time', () => {
  assert.equal(cgroupScope(`/kubepods/burstable/pod${UID}/${C}/${'a'.repeat(MAX_SCOPE_PATH)}`), 'other');
  const deep = `/kubepods/burstable/pod${UID}/${C}` + '/x'.repeat(1500);
  const t0 = process.hrtime.bigint();
  assert.equal(cgroupScope(deep), 'container');
  assert.ok(process.hrtime.bigint() - t0 < 50_000_000n, 'well under 50 ms');
  assert.equal(cgroupScope(undefined as unknown as string), 'other');
});

test('oomScope: no memcg limit is system; unknown OOM cgroup is null', () => {
  assert.equal(oomScope({ constraint: 'global', oom_cgroup: '/' }), 'system');
  assert.equal(oomScope({ constraint: 'cpuset', oom_cgroup: '' }), 'system');
  assert.equal(oomScope({ constraint: 'mempolicy', oom_cgroup: '/' }), 'system');
  assert.equal(oomScope({ constraint: 'unknown', oom_cgroup: '' }), null);
  assert.equal(oomScope({ constraint: 'memcg', oom_cgroup: '' }), null);
  assert.equal(oomScope({ constraint: 'memcg', oom_cgroup: `/kubepods/burstable/pod${UID}` }), 'pod');
  assert.equal(oomScope({ constraint: 'unknown', oom_cgroup: '/kubepods' }), 'node');
});

test('describeScope: the limit, its size, and a group kill', () => {
  const base = { constraint: 'memcg', memcg_limit_bytes: 512 * 1048576, container_id: C, k8s_container: 'app' } as unknown as OomRecord;
  assert.equal(describeScope({ ...base, oom_scope: 'container' }), 'container "app" limit 512Mi hit');
  assert.equal(
    describeScope({ ...base, oom_scope: 'container', oom_group_kill: true }),
    'container "app" limit 512Mi hit; container killed whole (memory.oom.group)',
  );
  assert.equal(describeScope({ ...base, oom_scope: 'pod', pod_name: 'web-0' }), 'pod "web-0" limit 512Mi hit (pod-level resources)');
  assert.equal(describeScope({ ...base, oom_scope: 'qos', k8s_qos: 'burstable' }), 'burstable QoS tier limit 512Mi hit (every pod of that class on the node)');
  assert.equal(describeScope({ ...base, oom_scope: 'node' }), 'node allocatable limit 512Mi hit (kubepods: all pods of the node)');
  assert.equal(describeScope({ ...base, constraint: 'global', oom_scope: 'system' }), 'no cgroup limit: the host ran out of memory');
  assert.equal(describeScope({ ...base, memcg_limit_bytes: null, oom_scope: 'other' }), 'cgroup limit hit outside Kubernetes pods');
  assert.equal(describeScope({ ...base }), '');
});
