import type convict from 'convict';
import { natural, noControl, positive } from '../../config/formats';

export type OwnerLookupMode = 'auto' | 'on' | 'off';
export const OWNER_LOOKUP_MODES: readonly OwnerLookupMode[] = ['auto', 'on', 'off'];

/** `enrich.kubernetes`: the pod's top owner from the Kubernetes API (./owner.ts). */
export interface KubernetesEnrichConfig {
  owner_lookup: OwnerLookupMode;
  kubeconfig: string;
  lookup_timeout_ms: number;
  request_timeout_ms: number;
  cache_ttl_ms: number;
  max_pods: number;
}

const E = 'OOMTRAIL_ENRICH_KUBERNETES_';

export const kubernetesEnrichConfigSchema: convict.Schema<KubernetesEnrichConfig> = {
  owner_lookup: {
    doc: "Resolve each pod's top owner (workload_kind, workload_name) through the Kubernetes API: get on pods, replicasets and jobs; the pod-name heuristic when the API does not answer. auto = on when sinks.kubernetes_events is enabled; on; off = the pod name only.",
    format: [...OWNER_LOOKUP_MODES],
    default: 'auto',
    env: `${E}OWNER_LOOKUP`,
  },
  kubeconfig: {
    doc: "Path of a kubeconfig file for the owner lookup; '' = sinks.kubernetes_events.kubeconfig (whose '' is the in-cluster service account).",
    format: noControl,
    default: '',
    env: `${E}KUBECONFIG`,
  },
  lookup_timeout_ms: {
    doc: 'Longest a record waits for its pod\'s owner (milliseconds; 0 = cached owners only); a lookup still running then goes on and fills the cache, and until the API answers again (at most 30 s) records take cached owners only.',
    format: natural,
    default: 1000,
    env: `${E}LOOKUP_TIMEOUT_MS`,
  },
  request_timeout_ms: {
    doc: 'Timeout of one API request of the owner lookup (milliseconds).',
    format: positive,
    default: 5000,
    env: `${E}REQUEST_TIMEOUT_MS`,
  },
  cache_ttl_ms: {
    doc: 'How long a pod\'s owner stays cached (milliseconds); a failed lookup (403, 404, no answer) is cached for at most 30 s.',
    format: positive,
    default: 600000,
    env: `${E}CACHE_TTL_MS`,
  },
  max_pods: {
    doc: 'Most pods whose owner is cached (the least recently used is evicted).',
    format: positive,
    default: 4096,
    env: `${E}MAX_PODS`,
  },
};

/** Whether the owner lookup runs: `on`, or `auto` with the kubernetes_events sink enabled. */
export function ownerLookupEnabled(k: KubernetesEnrichConfig, kubernetesEventsSinkEnabled: boolean): boolean {
  return k.owner_lookup === 'on' || (k.owner_lookup === 'auto' && kubernetesEventsSinkEnabled);
}

/** The kubeconfig the lookup uses: its own, else the sink's ('' = in-cluster). */
export function ownerKubeconfig(k: KubernetesEnrichConfig, sinkKubeconfig: string): string {
  return k.kubeconfig || sinkKubeconfig;
}

/** Why the lookup does not run, for `oomtrail check`; null when it runs. */
export function ownerLookupOffReason(k: KubernetesEnrichConfig, kubernetesEventsSinkEnabled: boolean, runtimeEnabled: boolean): string | null {
  if (!runtimeEnabled) return 'off: enrich.runtime is disabled (no pod names)';
  if (k.owner_lookup === 'off') return 'off (enrich.kubernetes.owner_lookup: off): from the pod name';
  if (!ownerLookupEnabled(k, kubernetesEventsSinkEnabled)) return 'off (auto, the kubernetes_events sink is disabled): from the pod name';
  return null;
}
