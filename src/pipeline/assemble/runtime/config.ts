import type convict from 'convict';
import { natural, positive } from '../../../config/formats';

/** `enrich.runtime`: which container runtimes name the victim, and how long a lookup may take. */
export interface RuntimeEnrichConfig {
  enabled: boolean;
  runtimes: string;
  docker_socket: string;
  containerd_socket: string;
  containerd_namespaces: string;
  crio_socket: string;
  lookup_timeout_ms: number;
  request_timeout_ms: number;
  grace_ms: number;
  max_containers: number;
  labels: string;
}

export const RUNTIME_NAMES = ['docker', 'containerd', 'cri-o'] as const;

function runtimeList(x: unknown): void {
  if (typeof x !== 'string') throw new Error('must be a string');
  for (const n of splitList(x)) {
    if (!(RUNTIME_NAMES as readonly string[]).includes(n)) throw new Error(`must be a comma-separated list of ${RUNTIME_NAMES.join(', ')}`);
  }
}

function path(x: unknown): void {
  if (typeof x !== 'string' || !x.startsWith('/')) throw new Error('must be an absolute path');
}
function names(x: unknown): void {
  if (typeof x !== 'string' || /[\u0000-\u001f\u007f]/.test(x)) throw new Error('must be a comma-separated list without control characters');
}

export function splitList(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

const E = 'OOMTRAIL_ENRICH_RUNTIME_';

export const runtimeConfigSchema: convict.Schema<RuntimeEnrichConfig> = {
  enabled: { doc: 'Name victims from the container runtimes (container name, image, pod, namespace, labels).', format: Boolean, default: true, env: `${E}ENABLED` },
  runtimes: { doc: 'Runtimes to query, comma-separated (docker, containerd, cri-o); each only when its socket exists.', format: runtimeList, default: 'docker,containerd,cri-o', env: `${E}RUNTIMES` },
  docker_socket: { doc: 'Docker Engine API socket.', format: path, default: '/var/run/docker.sock', env: `${E}DOCKER_SOCKET` },
  containerd_socket: { doc: 'containerd gRPC socket.', format: path, default: '/run/containerd/containerd.sock', env: `${E}CONTAINERD_SOCKET` },
  containerd_namespaces: { doc: 'containerd namespaces to follow, comma-separated.', format: names, default: 'k8s.io,moby', env: `${E}CONTAINERD_NAMESPACES` },
  crio_socket: { doc: 'CRI-O socket (its HTTP info API).', format: path, default: '/var/run/crio/crio.sock', env: `${E}CRIO_SOCKET` },
  lookup_timeout_ms: { doc: 'Longest a record waits for a container the cache does not know yet (milliseconds; 0 = cache only).', format: natural, default: 250, env: `${E}LOOKUP_TIMEOUT_MS` },
  request_timeout_ms: { doc: 'Longest one runtime API request (list, inspect) may take (milliseconds).', format: positive, default: 2000, env: `${E}REQUEST_TIMEOUT_MS` },
  grace_ms: { doc: 'How long a removed container stays in the cache (milliseconds).', format: natural, default: 600000, env: `${E}GRACE_MS` },
  max_containers: { doc: 'Most containers held in the cache (> 0); removed ones are evicted first.', format: positive, default: 20000, env: `${E}MAX_CONTAINERS` },
  labels: { doc: "Container labels copied into the record's `labels`, comma-separated names ('' = none).", format: names, default: '', env: `${E}LABELS` },
};
