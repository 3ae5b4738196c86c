import { noControl, nonEmptyString, positive } from '../../config/formats';
import type { KeyProblem } from '../../config/errors';
import type { ConfigSchema } from '../sink';

/** `sinks.kubernetes_events.*`: an events.k8s.io/v1 Event regarding the victim's Pod (see config/default.yaml). */
export interface KubernetesEventsSinkConfig {
  enabled: boolean;
  /** Path of a kubeconfig (systemd hosts); '' = in-cluster (KUBERNETES_SERVICE_HOST, the service-account token). */
  kubeconfig: string;
  /** reportingInstance and the Node of global OOM Events; '' = $NODE_NAME, else the host name. */
  node_name: string;
  reason: string;
  /** Repeats (same pod, container, comm, init or child, reason) within this window patch the Event's series. */
  series_window_ms: number;
  /** Per pod: at most `burst` API writes at once, refilled by one every `refill_ms` (client-go's spam filter shape). */
  rate_limit: { burst: number; refill_ms: number };
  request_timeout_ms: number;
}

/** A Kubernetes Event reason: CamelCase, no spaces (`kubectl get events --field-selector reason=OOMKill`). */
function reasonFormat(x: unknown): void {
  nonEmptyString(x);
  if (!/^[A-Za-z][A-Za-z0-9]{0,127}$/.test(x as string)) throw new Error('must be a CamelCase word of letters and digits, at most 128');
}

export const kubernetesEventsConfigSchema: ConfigSchema<KubernetesEventsSinkConfig> = {
  enabled: {
    doc: 'Post an events.k8s.io/v1 Event regarding the Pod for every kill in a pod (global OOMs: regarding the Node).',
    format: Boolean,
    default: false,
    env: 'OOMTRAIL_SINKS_KUBERNETES_EVENTS_ENABLED',
  },
  kubeconfig: {
    doc: "Path of a kubeconfig file (its current context; token, token file or client certificate); '' = in-cluster service account (KUBERNETES_SERVICE_HOST/PORT, token file re-read at each request, its ca.crt).",
    format: noControl,
    default: '',
    env: 'OOMTRAIL_SINKS_KUBERNETES_EVENTS_KUBECONFIG',
  },
  node_name: {
    doc: "This node's name: reportingInstance of every Event and the Node of global OOM Events; '' = the NODE_NAME environment variable (the DaemonSet's downward API), else the host name.",
    format: noControl,
    default: '',
    env: 'OOMTRAIL_SINKS_KUBERNETES_EVENTS_NODE_NAME',
  },
  reason: {
    doc: 'reason of every Event (CamelCase).',
    format: reasonFormat,
    default: 'OOMKill',
    env: 'OOMTRAIL_SINKS_KUBERNETES_EVENTS_REASON',
  },
  series_window_ms: {
    doc: 'Repeats (same pod, container, comm, init or child, and reason) within this many milliseconds of the last one update the Event\'s series (count, lastObservedTime) instead of creating an Event.',
    format: positive,
    default: 360000,
    env: 'OOMTRAIL_SINKS_KUBERNETES_EVENTS_SERIES_WINDOW_MS',
  },
  rate_limit: {
    burst: {
      doc: 'Per pod: API writes (create or series patch) allowed at once; beyond it a repeat is counted and written by one series patch when the bucket refills, and a new Event is dropped (logged).',
      format: positive,
      default: 25,
      env: 'OOMTRAIL_SINKS_KUBERNETES_EVENTS_RATE_LIMIT_BURST',
    },
    refill_ms: {
      doc: 'Per pod: one more API write allowed every this many milliseconds, up to burst.',
      format: positive,
      default: 10000,
      env: 'OOMTRAIL_SINKS_KUBERNETES_EVENTS_RATE_LIMIT_REFILL_MS',
    },
  },
  request_timeout_ms: {
    doc: 'Timeout of one API request (milliseconds); a timed-out request is retried.',
    format: positive,
    default: 10000,
    env: 'OOMTRAIL_SINKS_KUBERNETES_EVENTS_REQUEST_TIMEOUT_MS',
  },
};


/** Cross-key checks (no I/O): none beyond the formats yet; kept for the definition's shape. */
export function checkKubernetesEventsConfig(_config: KubernetesEventsSinkConfig): KeyProblem[] {
  return [];
}
