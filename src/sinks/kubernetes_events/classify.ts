import type { WriteResult } from '../sink';

/** Retry-After (seconds; the API server sends seconds) → milliseconds, or undefined. */
function retryAfterMs(value: string | null | undefined): number | undefined {
  if (!value || !/^\d+$/.test(value.trim())) return undefined;
  return Number(value.trim()) * 1000;
}

/** The API server's Status message (bounded, one line), else the start of the body. */
export function statusMessage(body: string): string {
  let msg = body;
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === 'string') msg = parsed.message;
  } catch {
    /* not a Status */
  }
  return msg.replace(/\s+/g, ' ').trim().slice(0, 300);
}

export type Verb = 'create' | 'patch';

/**
 * One API answer → the lane's outcome. 2xx delivered; 429, 5xx, 408 retryable (Retry-After honoured); 401 retryable
 * (a rotated token is read again at the next request); 403 (RBAC), 404 (namespace gone), 422 (invalid Event) and
 * any other 4xx rejected: the same body would be refused again. 409 on create is not seen here: the sink patches.
 */
export function classifyKubeStatus(status: number, body: string, retryAfter?: string | null): WriteResult {
  if (status >= 200 && status < 300) return { status: 'delivered' };
  const reason = `HTTP ${status}${body ? `: ${statusMessage(body)}` : ''}`;
  if (status >= 500 || status === 429 || status === 408 || status === 401) {
    const afterMs = retryAfterMs(retryAfter);
    return afterMs === undefined ? { status: 'retryable', reason } : { status: 'retryable', reason, afterMs };
  }
  return { status: 'rejected', reason };
}

/** The log line of a 403: the permission the agent's ClusterRole lacks, said the way RBAC rules are written. */
export function forbiddenLine(verb: Verb, namespace: string): string {
  return `kubernetes_events: forbidden: the agent may not ${verb} events.k8s.io/events in namespace ${namespace} (its ClusterRole needs verbs [create, patch] on apiGroups [events.k8s.io] resources [events]); Events are dead-lettered until it is granted`;
}
