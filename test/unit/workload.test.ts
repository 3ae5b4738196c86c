import { test } from 'node:test';
import assert from 'node:assert/strict';
import { workloadOf } from '../../src/pipeline/assemble/workload';

// pod names as the controllers generate them (hash and suffix alphabets as in Kubernetes' rand package)
const CASES: Array<[string, string | undefined, string | undefined, string | undefined]> = [
  ['Deployment', 'web-7d9f5c6b8d-x2k4q', 'Deployment', 'web'],
  ['Deployment, dashed name', 'shop-api-v2-6f4b9c7d5f-9zkxw', 'Deployment', 'shop-api-v2'],
  ['Deployment, 9-char hash', 'coredns-5d78c9869d-8pqzw', 'Deployment', 'coredns'],
  ['StatefulSet', 'postgres-0', 'StatefulSet', 'postgres'],
  ['StatefulSet, two-digit ordinal', 'kafka-broker-12', 'StatefulSet', 'kafka-broker'],
  ['DaemonSet', 'node-exporter-x7k2p', 'DaemonSet', 'node-exporter'],
  ['CronJob', 'nightly-backup-29412345-7hq2n', 'CronJob', 'nightly-backup'],
  ['indexed Job', 'train-3-qf8zt', 'Job', 'train'],
  ['bare Pod', 'debug', 'Pod', 'debug'],
  ['bare Pod with a suffix that is no generated one', 'my-pod-abcde', 'Pod', 'my-pod-abcde'],
  ['ordinal with a leading zero is not a StatefulSet', 'web-01', 'Pod', 'web-01'],
  ['hash with a vowel is not a pod-template-hash', 'web-7d9f5a6b8d-x2k4q', 'DaemonSet', 'web-7d9f5a6b8d'],
  // hostile or not a pod name: nothing
  ['path-shaped', 'kube-system/coredns-5d78c9869d-8pqzw', undefined, undefined],
  ['upper case', 'Web-0', undefined, undefined],
  ['newline', 'web-0\nx', undefined, undefined],
  ['too long', 'a'.repeat(254), undefined, undefined],
  ['empty', '', undefined, undefined],
  ['absent', undefined, undefined, undefined],
];

for (const [name, pod, kind, wl] of CASES) {
  test(`workloadOf: ${name}`, () => {
    const w = workloadOf(pod);
    assert.deepEqual([w.workload_kind, w.workload_name], [kind, wl], String(pod));
  });
}

test('workloadOf: a 253-character name is parsed in bounded time', () => {
  const long = `${'a-'.repeat(115)}7d9f5c6b8d-x2k4q`;
  const t0 = process.hrtime.bigint();
  assert.equal(workloadOf(long).workload_kind, 'Deployment');
  assert.ok(process.hrtime.bigint() - t0 < 50_000_000n);
});

test('workloadOf: a static pod (32-hex UID from the manifest hash) is a Pod, whatever its node name looks like', () => {
  assert.deepEqual(workloadOf('kube-apiserver-ip-10-0-0-1', '7a4d8c3b1e0f2a6b9c5d4e3f2a1b0c9d'), { workload_kind: 'Pod', workload_name: 'kube-apiserver-ip-10-0-0-1' });
  assert.deepEqual(workloadOf('kube-apiserver-ip-10-0-0-1', '3d274242-8ee0-11e9-a8a6-1e68d864ef1a'), { workload_kind: 'StatefulSet', workload_name: 'kube-apiserver-ip-10-0-0' }, 'without the static UID: the documented misreading');
});
