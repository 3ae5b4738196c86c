import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseContainer, type ContainerInfo } from '../../src/pipeline/assemble/container';

// Path shapes as printed by real hosts (docker, containerd, CRI-O, podman, kubelet with both cgroup drivers,
// kind, docker-desktop, mesos); ids and UIDs are of the same form as on those hosts.
const D1 = '3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860';
const D2 = '9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d';
const D3 = '6525e65814a99d431b6978e8f8c895013176c6c58173b56639d4b020c14e6022';
const C1 = '3e74d3fd9db4c9dd921ae05c2502fb984d0cde1b36e581b13f79c639da4518a1';
const C2 = '123cd1db937c3c2d0d7772ef9b0a1c4b0b3dcfcb6b889452a90b2fcb43eae43a';
const C3 = '5ebf11e02dbde102cda4b76bc0e3849a65f9edac7a12bdabfd34db01b9556101';
const C4 = 'c3bfd81b7da0be97190a74a7d459f4dfa18f57c88765cde2613af112020a1c4b';
const O1 = 'f52987fbdcc7b29175fb52e01c7917e9d6d2e14550e3a2a7abf739da5a067e31';
const O2 = 'bb959773d06ad1a07d469bced637bbc49b6f8573c493fd0548d7f5810eb3e5a8';
const P1 = 'e9cf81e3b1d172752567c8fe6ac48c1c751b9237ab47bf55cbfd5a971a4a9519';
const P2 = 'cbdfa0f1f08763b1963c30d98e11e1f052cb67f1e9b7c0ab8a6ca6c70cbcad69';
const P3 = '6dd05e91f00f99281f70b1fd90a29e5cc30b0dab243cb7cfb6153d8017872394';

const UID_BE = '3d274242-8ee0-11e9-a8a6-1e68d864ef1a';
const UID_BU = '73dc8baf-43a0-413e-aac2-5eb0868f6c1a';
const UID_GU = '2d51509a-fcf0-41cc-b535-57cfeeaf73d1';
const UID_CD = '6dc88073-2128-40d6-9dbc-0ba508da7fe8';
const UID_KIND = '6eab3b7b-f0a6-4bb8-bff2-d5bc9017c04b';
const UID_STATIC = 'b53dfa9e2dc9b890f7fadb2770857b03';
const us = (uid: string): string => uid.replace(/-/g, '_');

const none: ContainerInfo = { container_id: '', container_runtime: '', pod_uid: '', k8s_qos: '' };
const ctr = (container_id: string, container_runtime: string, pod_uid = '', k8s_qos = ''): ContainerInfo => ({
  container_id,
  container_runtime,
  pod_uid,
  k8s_qos,
});
const podOnly = (pod_uid: string, k8s_qos: string): ContainerInfo => ({ ...none, pod_uid, k8s_qos });

const cases: Array<[name: string, path: string, want: ContainerInfo]> = [
  // docker
  ['docker cgroupfs (v1/v2)', `/docker/${D1}`, ctr(D1, 'docker')],
  ['docker systemd scope', `/system.slice/docker-${D2}.scope`, ctr(D2, 'docker')],
  ['docker-in-docker: innermost wins', `/docker/${D1}/docker/${D2}`, ctr(D2, 'docker')],
  ['docker-ce parent', `/docker-ce/docker/${D1}`, ctr(D1, 'docker')],
  ['process in a sub-cgroup of a docker scope', `/system.slice/docker-${D2}.scope/init.scope`, ctr(D2, 'docker')],
  [
    'docker under kubepods, systemd (dockershim)',
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us(UID_BU)}.slice/docker-${D3}.scope`,
    ctr(D3, 'docker', UID_BU, 'burstable'),
  ],

  // containerd / CRI
  [
    'cri-containerd systemd, besteffort (v2)',
    `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${us(UID_CD)}.slice/cri-containerd-${C2}.scope`,
    ctr(C2, 'containerd', UID_CD, 'besteffort'),
  ],
  [
    'cri-containerd systemd, guaranteed (no qos slice)',
    `/kubepods.slice/kubepods-pod${us(UID_GU)}.slice/cri-containerd-${C2}.scope`,
    ctr(C2, 'containerd', UID_GU, 'guaranteed'),
  ],
  [
    'cgroupfs kubepods besteffort (v1)',
    `/kubepods/besteffort/pod${UID_BE}/${C1}`,
    ctr(C1, 'containerd', UID_BE, 'besteffort'),
  ],
  [
    'cgroupfs kubepods burstable',
    `/kubepods/burstable/pod${UID_BU}/${C1}`,
    ctr(C1, 'containerd', UID_BU, 'burstable'),
  ],
  ['cgroupfs kubepods guaranteed', `/kubepods/pod${UID_GU}/${C1}`, ctr(C1, 'containerd', UID_GU, 'guaranteed')],
  [
    'docker-desktop doubled kubepods',
    `/kubepods/kubepods/besteffort/pod${UID_BE}/${C4}`,
    ctr(C4, 'containerd', UID_BE, 'besteffort'),
  ],
  [
    'mesos-nested kubepods',
    `/mesos/3b1cf944-1d97-40a6-ac73-b156ac2f2bfe/kubepods/besteffort/pod${UID_BE}/${C1}`,
    ctr(C1, 'containerd', UID_BE, 'besteffort'),
  ],
  [
    'kind, systemd driver under --cgroup-root',
    `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${us(UID_CD)}.slice/cri-containerd-${C2}.scope`,
    ctr(C2, 'containerd', UID_CD, 'besteffort'),
  ],
  [
    'kind, cgroupfs under --cgroup-root',
    `/kubelet/kubepods/burstable/pod${UID_BU}/${O1}`,
    ctr(O1, 'containerd', UID_BU, 'burstable'),
  ],
  [
    'kind on podman: the inner pod container, not the node',
    `/machine.slice/libpod-${P2}.scope/container/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${us(UID_KIND)}.slice/cri-containerd-${C3}.scope`,
    ctr(C3, 'containerd', UID_KIND, 'besteffort'),
  ],
  [
    'kind on docker (v1): pod-level cgroup inside the node container',
    `/docker/${D1}/kubepods/burstable/pod${UID_BU}`,
    podOnly(UID_BU, 'burstable'),
  ],
  ['containerd namespace default (ctr/nerdctl cgroupfs)', `/default/${C2}`, ctr(C2, 'containerd')],
  ['containerd namespace k8s.io', `/k8s.io/${C2}`, ctr(C2, 'containerd')],
  ['nerdctl systemd scope', `/system.slice/nerdctl-${C2}.scope`, ctr(C2, 'containerd')],

  // CRI-O
  [
    'crio systemd burstable',
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us(UID_BU)}.slice/crio-${O1}.scope`,
    ctr(O1, 'cri-o', UID_BU, 'burstable'),
  ],
  [
    'crio systemd with crun /container leaf',
    `/kubepods.slice/kubepods-pod${us(UID_GU)}.slice/crio-${O1}.scope/container`,
    ctr(O1, 'cri-o', UID_GU, 'guaranteed'),
  ],
  [
    'crio-conmon is the monitor, not the container',
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us(UID_BU)}.slice/crio-conmon-${O1}.scope`,
    podOnly(UID_BU, 'burstable'),
  ],
  [
    'crio cgroupfs, static pod (32-hex uid)',
    `/kubepods/pod${UID_STATIC}/crio-${O2}`,
    ctr(O2, 'cri-o', UID_STATIC, 'guaranteed'),
  ],
  [
    'static pod, systemd driver',
    `/kubepods.slice/kubepods-pod${UID_STATIC}.slice/crio-${O2}.scope`,
    ctr(O2, 'cri-o', UID_STATIC, 'guaranteed'),
  ],

  // podman
  ['podman rootful systemd', `/machine.slice/libpod-${P3}.scope`, ctr(P3, 'podman')],
  ['podman crun /container leaf', `/machine.slice/libpod-${P1}.scope/container`, ctr(P1, 'podman')],
  [
    'podman rootless',
    `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${P1}.scope/container`,
    ctr(P1, 'podman'),
  ],
  ['podman cgroupfs', `/libpod_parent/libpod-${P3}`, ctr(P3, 'podman')],
  ['podman in a pod slice', `/machine.slice/machine-libpod_pod_${C1}.slice/libpod-${P3}.scope`, ctr(P3, 'podman')],
  ['libpod-conmon is the monitor', `/machine.slice/libpod-conmon-${P3}.scope`, none],
  ['podman cgroupfs conmon', '/libpod_parent/conmon', none],

  // pod- and qos-level cgroups without a container
  [
    'pod slice, systemd, burstable',
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us(UID_BU)}.slice`,
    podOnly(UID_BU, 'burstable'),
  ],
  ['pod, cgroupfs, guaranteed', `/kubepods/pod${UID_GU}`, podOnly(UID_GU, 'guaranteed')],
  ['pod, systemd, guaranteed', `/kubepods.slice/kubepods-pod${us(UID_GU)}.slice`, podOnly(UID_GU, 'guaranteed')],
  ['qos level only', '/kubepods.slice/kubepods-besteffort.slice', podOnly('', 'besteffort')],
  ['qos level only, cgroupfs', '/kubepods/burstable', podOnly('', 'burstable')],
  ['kubepods root', '/kubepods.slice', none],

  // not containers
  ['root', '/', none],
  ['empty', '', none],
  ['systemd service', '/system.slice/sshd.service', none],
  ['docker daemon itself', '/system.slice/docker.service', none],
  ['containerd daemon itself', '/system.slice/containerd.service', none],
  ['user session', '/user.slice/user-1000.slice/session-3.scope', none],
  ['user manager app', '/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-1234.scope', none],
  ['init scope', '/init.scope', none],
  ['lxc', '/lxc.payload.web', none],
  ['qemu machine', '/machine.slice/machine-qemu\\x2d1\\x2dvm.scope', none],

  // look-alikes
  ['63 hex is not an id', `/system.slice/docker-${D2.slice(1)}.scope`, none],
  ['65 hex is not an id', `/docker/${D1}0`, none],
  ['upper-case hex is not an id', `/docker/${D1.toUpperCase()}`, none],
  ['non-hex character', `/docker/${D1.slice(0, 63)}g`, none],
  ['empty docker scope', '/system.slice/docker-.scope', none],
  ['docker id without .scope under a slice', `/system.slice/docker-${D2}`, none],
  ['docker mount unit', `/system.slice/var-lib-docker-containers-${D2}-mounts-shm.mount`, none],
  ['bare id under an unknown parent', `/ecs/55091c13-b8cf-4801-b527-f4601742204d/${C1}`, none],
  ['bare id at the root', `/${C1}`, none],
  ['default namespace not at the top', `/foo/default/${C2}`, none],
  ['pod<uid> outside kubepods', `/system.slice/pod${UID_BU}/${C1}`, none],
  ['systemd pod slice with dashed uid', `/kubepods.slice/kubepods-pod${UID_GU}.slice`, none],
  ['malformed uid', `/kubepods/burstable/pod${UID_BU.slice(1)}/${C1}`, podOnly('', 'burstable')],
];

test('real-world cgroup paths', async (t) => {
  assert.ok(cases.length >= 25);
  for (const [name, path, want] of cases) {
    await t.test(name, () => {
      assert.deepEqual(parseContainer(path), want, path);
    });
  }
});

test('trailing slash and repeated slashes are tolerated', () => {
  assert.deepEqual(parseContainer(`/docker/${D1}/`), ctr(D1, 'docker'));
  assert.deepEqual(parseContainer(`//kubepods//pod${UID_GU}//${C1}`), ctr(C1, 'containerd', UID_GU, 'guaranteed'));
});

test('invariants over the table', () => {
  for (const [, path] of cases) {
    const got = parseContainer(path);
    assert.equal(got.container_id === '', got.container_runtime === '', path);
    if (got.container_id) assert.match(got.container_id, /^[0-9a-f]{64}$/, path);
    assert.ok(['', 'docker', 'containerd', 'cri-o', 'podman'].includes(got.container_runtime), path);
    assert.ok(['', 'guaranteed', 'burstable', 'besteffort'].includes(got.k8s_qos), path);
    if (got.pod_uid) {
      assert.notEqual(got.k8s_qos, '', path);
      assert.doesNotMatch(got.pod_uid, /_/, path);
    }
  }
});

test('the result is a fresh object each call', () => {
  const a = parseContainer('/');
  a.container_id = 'x';
  assert.equal(parseContainer('/').container_id, '');
});
