/*
 * deploy/kubernetes/daemonset.yaml against the Kubernetes OpenAPI schemas, offline: PyPI's kubernetes-validate
 * (which ships the schemas; installed by test/servers/docker/setup.sh) in --strict mode (unknown fields refused),
 * for Kubernetes 1.37 and 1.30. Also: the validator really rejects a broken manifest, the embedded config.yaml
 * is a valid agent configuration, and the DaemonSet carries what the README promises.
 * Runtime: ~3 s.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import yaml from 'js-yaml';
import { loadConfig } from '../../src/config/load';
import { REPO } from '../helpers/agent';
import { CACHE } from '../servers/docker/engine';

const pexec = promisify(execFile);
const VALIDATOR = path.join(CACHE, 'kv-venv/bin/kubernetes-validate');
const MANIFEST = path.join(REPO, 'deploy/kubernetes/daemonset.yaml');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-k8s-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function validate(file: string, version: string): Promise<{ ok: boolean; out: string }> {
  try {
    const { stdout, stderr } = await pexec(VALIDATOR, ['--strict', '-k', version, file]);
    return { ok: true, out: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const docs = yaml.loadAll(fs.readFileSync(MANIFEST, 'utf8')) as any[];
const ds = docs.find((d) => d.kind === 'DaemonSet');

describe('deploy/kubernetes/daemonset.yaml', () => {
  // env wins over the file: only what the ConfigMap cannot hold (the node's own name) comes through env
  test('the DaemonSet sets only OOMTRAIL_HOST_NAME through env; the ConfigMap\'s keys take effect', () => {
    const container = ds.spec.template.spec.containers[0];
    const envNames = (container.env ?? []).map((e: { name: string }) => e.name).filter((n: string) => n.startsWith('OOMTRAIL_'));
    assert.deepEqual(envNames, ['OOMTRAIL_HOST_NAME']);
    const cm = docs.find((d) => d.kind === 'ConfigMap');
    const edited = yaml.load(cm.data['config.yaml']) as Record<string, Record<string, Record<string, unknown>>>;
    edited.pipeline.spool.dir = '/var/lib/oomtrail/edited-spool';
    edited.sinks.file.path = '/var/lib/oomtrail/edited.jsonl';
    const file = path.join(tmp, 'edited-config.yaml');
    fs.writeFileSync(file, yaml.dump(edited));
    const { config, originOf } = loadConfig({ file, env: { OOMTRAIL_HOST_NAME: 'node-1' } });
    assert.equal(config.pipeline.spool.dir, '/var/lib/oomtrail/edited-spool');
    assert.equal(config.sinks.file.path, '/var/lib/oomtrail/edited.jsonl');
    assert.equal(originOf('pipeline.spool.dir'), `file ${file}`);
    assert.equal(originOf('host.name'), 'env OOMTRAIL_HOST_NAME');
  });

  for (const version of ['1.37.0', '1.30.0']) {
    test(`validates against the Kubernetes ${version} schemas (strict)`, async () => {
      assert.ok(fs.existsSync(VALIDATOR), `${VALIDATOR} missing: run test/servers/docker/setup.sh`);
      const r = await validate(MANIFEST, version);
      assert.ok(r.ok, r.out);
      assert.equal((r.out.match(/passed for resource/g) ?? []).length, docs.length, r.out);
    });
  }

  test('the validator rejects a broken manifest (unknown field, wrong type)', async () => {
    const bad = structuredClone(ds);
    bad.spec.template.spec.containers[0].securityContext.capabilites = { add: ['BPF'] };
    bad.spec.template.spec.hostPID = 'yes';
    const file = path.join(tmp, 'bad.yaml');
    fs.writeFileSync(file, yaml.dump(bad));
    const r = await validate(file, '1.37.0');
    assert.equal(r.ok, false, r.out);
    assert.match(r.out, /capabilites|hostPID/);
  });

  test('the ConfigMap config.yaml is a valid agent configuration', () => {
    const cm = docs.find((d) => d.kind === 'ConfigMap');
    const file = path.join(tmp, 'config.yaml');
    fs.writeFileSync(file, cm.data['config.yaml']);
    const { config } = loadConfig({ file, env: {} });
    assert.equal(config.pipeline.spool.dir, '/var/lib/oomtrail/spool');
  });

  test('least privilege, host access and the spool as documented', () => {
    const pod = ds.spec.template.spec;
    const c = pod.containers[0];
    assert.equal(pod.hostPID, true);
    assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
    assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'], add: ['BPF', 'PERFMON', 'DAC_READ_SEARCH'] });
    assert.equal(c.securityContext.privileged, false);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.ok(c.resources.limits.memory && c.resources.requests.cpu);
    const mounts = Object.fromEntries(c.volumeMounts.map((m: { name: string; mountPath: string }) => [m.mountPath, m.name]));
    for (const p of ['/sys/kernel/btf', '/sys/fs/cgroup', '/sys/kernel/tracing', '/var/lib/oomtrail', '/etc/oomtrail/credentials']) assert.ok(mounts[p], p);
    const vol = Object.fromEntries(pod.volumes.map((v: { name: string }) => [v.name, v]));
    assert.equal(vol.spool.hostPath.path, '/var/lib/oomtrail');
    assert.equal(vol.credentials.secret.secretName, 'oomtrail-credentials');
    assert.equal(vol.config.configMap.name, 'oomtrail-config');
  });

  // what the ClusterRole grants is checked against a real API server in test/k8s/apiserver.test.ts
  test('the pods run as the ServiceAccount the ClusterRoleBinding binds, and know their node (NODE_NAME)', () => {
    const pod = ds.spec.template.spec;
    const binding = docs.find((d) => d.kind === 'ClusterRoleBinding');
    const role = docs.find((d) => d.kind === 'ClusterRole');
    assert.equal(binding.roleRef.name, role.metadata.name);
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: pod.serviceAccountName, namespace: ds.metadata.namespace }]);
    const env = pod.containers[0].env.find((e: { name: string }) => e.name === 'NODE_NAME');
    assert.deepEqual(env?.valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
  });

  test('the ConfigMap enables the kubernetes_events sink in-cluster, and the pod (only) mounts the token it needs', () => {
    const cm = docs.find((d) => d.kind === 'ConfigMap');
    const file = path.join(tmp, 'config-events.yaml');
    fs.writeFileSync(file, cm.data['config.yaml']);
    const ev = loadConfig({ file, env: {} }).config.sinks.kubernetes_events;
    assert.equal(ev.enabled, true);
    assert.equal(ev.kubeconfig, '', 'in a pod the sink uses its service account, not a kubeconfig');
    assert.equal(ds.spec.template.spec.automountServiceAccountToken, true);
    assert.equal(docs.find((d) => d.kind === 'ServiceAccount').automountServiceAccountToken, false);
  });

  test('each runtime socket the config names is that runtime\'s own socket on the node, mounted read-only', () => {
    const cm = docs.find((d) => d.kind === 'ConfigMap');
    const file = path.join(tmp, 'config-sockets.yaml');
    fs.writeFileSync(file, cm.data['config.yaml']);
    const rt = loadConfig({ file, env: {} }).config.enrich.runtime;
    const defaults = loadConfig({ env: {} }).config.enrich.runtime;
    const pod = ds.spec.template.spec;
    const vol = Object.fromEntries(pod.volumes.map((v: { name: string }) => [v.name, v]));
    const onNode = (inPod: string): string | null => {
      for (const m of pod.containers[0].volumeMounts as Array<{ name: string; mountPath: string; readOnly?: boolean }>) {
        // a directory above the socket, or the socket itself mounted as a file
        if (inPod !== m.mountPath && !inPod.startsWith(m.mountPath + '/')) continue;
        assert.equal(m.readOnly, true, `${m.mountPath} read-only`);
        const host = vol[m.name].hostPath?.path;
        return host ? host + inPod.slice(m.mountPath.length) : null;
      }
      return null;
    };
    const real = (p: string) => p.replace(/^\/var\/run\//, '/run/');
    const used = rt.runtimes.split(',');
    assert.deepEqual(used.sort(), ['containerd', 'cri-o'], 'the Kubernetes runtimes');
    assert.equal(onNode(rt.containerd_socket), real(defaults.containerd_socket));
    assert.equal(onNode(rt.crio_socket), real(defaults.crio_socket));
  });

  test('of the runtimes, only their sockets are mounted: never a directory such as /run/containerd (every container\'s bundle and rootfs)', () => {
    const pod = ds.spec.template.spec;
    const host = pod.volumes.filter((v: { hostPath?: { path: string } }) => v.hostPath).map((v: { hostPath: { path: string } }) => v.hostPath.path);
    const runtimeDirs = ['/run/containerd', '/run/crio', '/var/run/containerd', '/var/run/crio', '/run', '/var/run', '/var/lib/containerd', '/var/lib/containers'];
    for (const p of host) {
      if (!/containerd|crio|^\/run|^\/var\/run/.test(p)) continue;
      assert.ok(!runtimeDirs.includes(p.replace(/\/+$/, '')), `${p}: a runtime directory is mounted`);
      assert.match(p, /\.sock$/, `${p}: only sockets of the runtimes`);
    }
    assert.deepEqual(host.filter((p: string) => p.endsWith('.sock')).sort(), ['/run/containerd/containerd.sock', '/run/crio/crio.sock']);
  });
});
