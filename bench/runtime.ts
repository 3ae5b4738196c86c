/*
 * Runtime names: cache memory per 1,000 containers, and lookup latency (p50/p99) on the record's path:
 * a cache hit, and a miss answered by a real dockerd (inspect) and a real containerd (Get).
 * Run as root: `node --expose-gc dist/bench/runtime.js` (starts a private dockerd and containerd).
 */
import crypto from 'node:crypto';
import path from 'node:path';
import winston from 'winston';
import { MetaCache } from '../src/pipeline/assemble/runtime/cache';
import { RuntimeMetadata } from '../src/pipeline/assemble/runtime';
import type { RuntimeEnrichConfig } from '../src/pipeline/assemble/runtime/config';
import { CACHE, DEBIAN_IMAGE, startDockerEngine } from '../test/servers/docker/engine';
import { ensureImage, IMAGE, startContainerd } from '../test/servers/containerd/engine';

const gc = (globalThis as { gc?: () => void }).gc;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(3)} ms, p99 ${pct(xs, 99).toFixed(3)} ms (n=${xs.length})`;

function k8sMeta(i: number) {
  const pod = `web-${crypto.randomBytes(4).toString('hex')}-${crypto.randomBytes(3).toString('hex')}`;
  return {
    name: `k8s_app_${pod}_shop_${crypto.randomUUID()}_0`,
    image: 'registry.example.com/team/web:1.27.3',
    labels: {
      'io.kubernetes.pod.name': pod,
      'io.kubernetes.pod.namespace': `ns-${i % 20}`,
      'io.kubernetes.pod.uid': crypto.randomUUID(),
      'io.kubernetes.container.name': 'app',
      'io.kubernetes.container.hash': crypto.randomBytes(4).toString('hex'),
      'io.kubernetes.container.restartCount': '0',
      'io.kubernetes.container.terminationMessagePath': '/dev/termination-log',
      'app.kubernetes.io/name': 'web',
    },
  };
}

function memoryPer1000(): number {
  const n = 10_000;
  // module loading leaves garbage and weak references that one collection does not clear
  for (let i = 0; i < 3; i++) gc?.();
  const before = process.memoryUsage().heapUsed;
  const c = new MetaCache(n, 600_000);
  // each entry as a runtime's JSON hands it over (fresh strings); the temporaries are collected below
  for (let i = 0; i < n; i++) c.put(crypto.randomBytes(32).toString('hex'), JSON.parse(JSON.stringify(k8sMeta(i))));
  for (let i = 0; i < 3; i++) gc?.();
  const after = process.memoryUsage().heapUsed;
  if (c.size !== n) throw new Error('cache lost entries');
  return ((after - before) / n) * 1000;
}

function cfg(over: Partial<RuntimeEnrichConfig>): RuntimeEnrichConfig {
  return {
    enabled: true, runtimes: 'docker', docker_socket: '/nonexistent', containerd_socket: '/nonexistent', containerd_namespaces: 'k8s.io',
    crio_socket: '/nonexistent', lookup_timeout_ms: 1000, request_timeout_ms: 2000, grace_ms: 600_000, max_containers: 20_000, labels: 'app.kubernetes.io/name', ...over,
  };
}

async function main(): Promise<void> {
  if (!gc) throw new Error('run with --expose-gc');
  const logger = winston.createLogger({ transports: [new winston.transports.Console({ silent: true })] });
  console.log(`cache memory: ${(memoryPer1000() / 1024).toFixed(0)} KiB per 1,000 containers (8 labels each, heap)`);
  if (process.argv.includes('--memory-only')) return;

  const engine = await startDockerEngine({ dataRoot: '/var/tmp/oomtrail-test-runtime-docker' });
  const ctrd = await startContainerd('/var/tmp/oomtrail-test-runtime-containerd');
  try {
    if (!(await engine.docker(['images', '-q', DEBIAN_IMAGE])).trim()) {
      await engine.docker(['import', '--change', 'CMD ["/bin/bash"]', path.join(CACHE, 'rootfs.tar'), DEBIAN_IMAGE], { timeoutMs: 300_000 });
    }
    await ensureImage(ctrd, 'k8s.io', '/var/tmp/oomtrail-test-runtime-containerd-image');
    const N = 100;
    const dockerIds: string[] = [];
    for (let i = 0; i < N; i++) dockerIds.push((await engine.docker(['create', '--label', `io.kubernetes.pod.name=p${i}`, DEBIAN_IMAGE, 'true'])).trim());
    const ctrIds: string[] = [];
    for (let i = 0; i < N; i++) {
      const id = crypto.randomBytes(32).toString('hex');
      await ctrd.ctr(['containers', 'create', '--label', `io.kubernetes.pod.name=p${i}`, IMAGE, id, 'true'], { namespace: 'k8s.io' });
      ctrIds.push(id);
    }
    for (const [name, c, ids] of [
      ['docker', cfg({ runtimes: 'docker', docker_socket: engine.host.replace('unix://', '') }), dockerIds],
      ['containerd', cfg({ runtimes: 'containerd', containerd_socket: ctrd.socket }), ctrIds],
    ] as const) {
      const rt = new RuntimeMetadata(c, logger);
      let t0 = performance.now();
      const st = await rt.start();
      const startMs = performance.now() - t0;
      const hits: number[] = [];
      for (let r = 0; r < 20; r++)
        for (const id of ids) {
          t0 = performance.now();
          const f = await rt.annotate({ container_id: id });
          hits.push(performance.now() - t0);
          if (!f.pod_name) throw new Error(`${name}: no name for ${id}`);
        }
      const misses: number[] = [];
      for (const id of ids) {
        (rt.cache as unknown as { entries: Map<string, unknown> }).entries.delete(id);
        t0 = performance.now();
        const f = await rt.annotate({ container_id: id });
        misses.push(performance.now() - t0);
        if (!f.pod_name) throw new Error(`${name}: miss gave no name for ${id}`);
      }
      rt.stop();
      console.log(`${name}: start (stream + list of ${st[0]!.containers}) ${startMs.toFixed(1)} ms; cache hit ${fmt(hits)}; miss (direct ask) ${fmt(misses)}`);
    }
    await engine.docker(['rm', ...dockerIds]);
    for (const id of ctrIds) await ctrd.ctr(['containers', 'rm', id], { namespace: 'k8s.io' });
  } finally {
    await engine.stop();
    await ctrd.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
