/*
 * What the Kubernetes features cost the agent (issue 30): the built agent idle, side by side in one run, with the
 * test configuration as it is and with the kubernetes_events sink on (owner_lookup auto = on), both against a real
 * kube-apiserver 1.37 (test/servers/kubernetes, the manifest's RBAC, a TokenRequest token in a kubeconfig).
 * RSS and VmHWM after a warm-up, and their ratio. @kubernetes/client-node is loaded only in the second.
 *
 *   npm run bench:kubernetes        (root; K8S_BENCH_WARMUP_S=15, K8S_BENCH_ROUNDS=2: alternating off/on)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startAgent, sleep, type RunningAgent } from '../test/helpers/agent';
import { memoryKiB } from '../test/helpers/metrics';
import { startKubeApiServer } from '../test/servers/kubernetes/server';
import { AGENT_SA, applyManifestRbac, writeKubeconfig } from '../test/k8s/fixtures';

const WARMUP_S = Number(process.env.K8S_BENCH_WARMUP_S ?? 15);
const ROUNDS = Number(process.env.K8S_BENCH_ROUNDS ?? 2);

async function measure(env: NodeJS.ProcessEnv): Promise<{ rss: number; hwm: number }> {
  const agent: RunningAgent = await startAgent('', env);
  try {
    await sleep(WARMUP_S * 1000);
    return memoryKiB(agent.child.pid!);
  } finally {
    await agent.stop();
  }
}

async function main(): Promise<void> {
  const kube = await startKubeApiServer();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-bench-k8s-'));
  try {
    await applyManifestRbac(kube);
    const token = await kube.serviceAccountToken(AGENT_SA.metadata.namespace, AGENT_SA.metadata.name, 3600);
    const kubeconfig = writeKubeconfig(kube, dir, 'oomtrail', token);
    const on = { OOMTRAIL_SINKS_KUBERNETES_EVENTS_ENABLED: 'true', OOMTRAIL_SINKS_KUBERNETES_EVENTS_KUBECONFIG: kubeconfig, OOMTRAIL_SINKS_KUBERNETES_EVENTS_NODE_NAME: 'node-1' };
    const rows: Array<{ variant: string; rss: number; hwm: number }> = [];
    for (let i = 0; i < ROUNDS; i++) {
      rows.push({ variant: 'off', ...(await measure({})) });
      rows.push({ variant: 'on', ...(await measure(on)) });
    }
    const mb = (kb: number) => (kb / 1024).toFixed(1);
    console.log('| variant | RSS MB | VmHWM MB |\n|---|---|---|');
    for (const r of rows) console.log(`| ${r.variant === 'on' ? 'kubernetes_events + owner lookup' : 'test configuration'} | ${mb(r.rss)} | ${mb(r.hwm)} |`);
    const avg = (v: string, k: 'rss' | 'hwm') => rows.filter((r) => r.variant === v).reduce((s, r) => s + r[k], 0) / ROUNDS;
    console.log(`on/off: RSS ${(avg('on', 'rss') / avg('off', 'rss')).toFixed(2)}x (+${mb(avg('on', 'rss') - avg('off', 'rss'))} MB), VmHWM ${(avg('on', 'hwm') / avg('off', 'hwm')).toFixed(2)}x (+${mb(avg('on', 'hwm') - avg('off', 'hwm'))} MB)`);
  } finally {
    await kube.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
