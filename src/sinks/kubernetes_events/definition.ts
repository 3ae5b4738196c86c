import os from 'node:os';
import type { KeyProblem } from '../../config/errors';
import type { SinkDefinition } from '../sink';
import { StartProblems } from '../secret';
import { checkKubernetesEventsConfig, kubernetesEventsConfigSchema, type KubernetesEventsSinkConfig } from './config';

/** node_name, else $NODE_NAME (the DaemonSet's downward API), else the host name. */
export function nodeNameOf(config: KubernetesEventsSinkConfig, env: NodeJS.ProcessEnv = process.env): string {
  return config.node_name || env.NODE_NAME || os.hostname();
}

/**
 * The API (kubeconfig, or the service account's token and CA), its files read now; problems name the key.
 * `check` does not load @kubernetes/client-node (the pre-flight runs before the BPF objects load, and the
 * library costs ~70 MB of RSS); `open` does (create(), after the loads): only an agent with this sink enabled loads it.
 */
function connect(config: KubernetesEventsSinkConfig, start: StartProblems, mode: 'check' | 'open') {
  /* eslint-disable-next-line @typescript-eslint/no-require-imports */
  const { checkKubeApiConfig, kubeApiProblem, openKubeApi } = require('../../host/kubeapi') as typeof import('../../host/kubeapi');
  try {
    if (mode === 'check') return void checkKubeApiConfig({ kubeconfig: config.kubeconfig });
    return openKubeApi({ kubeconfig: config.kubeconfig, timeoutMs: config.request_timeout_ms });
  } catch (err) {
    start.add('kubeconfig', kubeApiProblem(err, config.kubeconfig));
    return undefined;
  }
}

export const definition: SinkDefinition<KubernetesEventsSinkConfig> = {
  name: 'kubernetes_events',
  schema: kubernetesEventsConfigSchema,
  check: checkKubernetesEventsConfig,
  preflight(config): KeyProblem[] {
    const start = new StartProblems('sinks.kubernetes_events');
    start.addAll(checkKubernetesEventsConfig(config));
    connect(config, start, 'check');
    return start.problems;
  },
  /**
   * A kubeconfig that cannot be read or used, or no service account when in-cluster, is a configuration error
   * (exit 78) at start; the service-account token is still read at each request (kubelet rotates it).
   */
  create(config, deps) {
    const start = new StartProblems('sinks.kubernetes_events');
    start.addAll(checkKubernetesEventsConfig(config));
    const conn = connect(config, start, 'open');
    start.throwIfAny();
    /* eslint-disable-next-line @typescript-eslint/no-require-imports */
    const { KubernetesEventsSink } = require('./sink') as typeof import('./sink');
    return new KubernetesEventsSink(config, nodeNameOf(config), deps.logger, conn!);
  },
};
