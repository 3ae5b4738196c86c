import fs from 'node:fs';
import path from 'node:path';
import type * as ClientNode from '@kubernetes/client-node';
import { readKubeconfigFile } from './kubeconfig';

/*
 * The Kubernetes API, through the official @kubernetes/client-node: its KubeConfig (kubeconfig files with every
 * credential kind kubectl knows, in-cluster service accounts with the token file re-read as it rotates) and its typed
 * APIs. The library is loaded on first use, so an agent with no Kubernetes feature enabled never loads it. Used by
 * the kubernetes_events sink and by owner lookup in enrichment; answers are plain data so neither depends on the
 * library's types.
 */

export const IN_CLUSTER_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** An HTTP answer from the API server: 2xx with the object, or the error's status and body (a Status, bounded). */
export interface KubeAnswer {
  status: number;
  /** the response body as text (a Status for errors), at most 64 KiB */
  text: string;
  retryAfter: string | null;
  /** the object read or written, on 2xx */
  object?: unknown;
}

/** The API server could not be reached or did not answer in time: always retryable. Never carries a token. */
export class KubeTransportError extends Error {
  readonly retriable = true;
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

export type OwnerReadKind = 'Pod' | 'ReplicaSet' | 'Job';

export interface KubeApi {
  /** https://host:port of the current context */
  readonly server: string;
  createEvent(namespace: string, body: object): Promise<KubeAnswer>;
  /** a JSON merge patch (application/merge-patch+json) of one Event */
  patchEvent(namespace: string, name: string, mergePatch: object): Promise<KubeAnswer>;
  /** GET /apis/events.k8s.io/v1 (discovery: any authenticated identity may) */
  eventsApiResources(): Promise<KubeAnswer>;
  /** GET one Pod, ReplicaSet or Job (the kinds whose owners lead to a workload); the object in `object` */
  read(kind: OwnerReadKind, namespace: string, name: string): Promise<KubeAnswer>;
}

export interface KubeApiOptions {
  /** a kubeconfig file (systemd hosts); empty: the in-cluster service account */
  kubeconfig?: string;
  /** each request's deadline */
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
  inClusterDir?: string;
}

let loaded: typeof ClientNode | undefined;
function clientNode(): typeof ClientNode {
  /* eslint-disable-next-line @typescript-eslint/no-require-imports */
  return (loaded ??= require('@kubernetes/client-node') as typeof ClientNode);
}

/** The service account's files, checked now, as client-node's loadFromCluster would use them (from `dir`). */
function inClusterConfig(k8s: typeof ClientNode, env: NodeJS.ProcessEnv, dir: string): ClientNode.KubeConfig {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT || '443';
  if (!host) throw new Error('is empty and KUBERNETES_SERVICE_HOST is not set: not in a cluster (set a kubeconfig path)');
  const tokenFile = path.join(dir, 'token');
  const caFile = path.join(dir, 'ca.crt');
  fs.accessSync(tokenFile, fs.constants.R_OK);
  fs.accessSync(caFile, fs.constants.R_OK);
  const kc = new k8s.KubeConfig();
  const h = host.includes(':') ? `[${host}]` : host;
  kc.loadFromClusterAndUser(
    { name: 'inCluster', server: `https://${h}:${port}`, caFile, skipTLSVerify: false },
    // client-node's token-file provider: re-read at most 60 s after the last read, as client-go does (kubelet
    // rotates the projected token well before it expires)
    { name: 'inClusterUser', authProvider: { name: 'tokenFile', config: { tokenFile } } },
  );
  return kc;
}

type Named<T> = { name: string } & T;
interface KubeconfigDoc {
  users?: Array<Named<{ user?: Record<string, unknown> }>>;
}

/** A kubeconfig's current context, checked now: every file it names is read once so a bad path fails at start. */
function fileConfig(k8s: typeof ClientNode, file: string): ClientNode.KubeConfig {
  const doc = readKubeconfigFile(file) as KubeconfigDoc | null;
  if (!doc || typeof doc !== 'object') throw new Error('is not a kubeconfig (YAML mapping expected)');
  const kc = new k8s.KubeConfig();
  try {
    kc.loadFromFile(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code) throw err;
    throw new Error(`is not a valid kubeconfig: ${e.message.split('\n')[0]!.slice(0, 200)}`);
  }
  const ctx = kc.getContextObject(kc.getCurrentContext()) ?? (kc.getContexts().length === 1 ? kc.getContexts()[0] : undefined);
  if (!ctx) throw new Error('has no current-context');
  if (kc.getCurrentContext() !== ctx.name) kc.setCurrentContext(ctx.name);
  const cluster = kc.getCluster(ctx.cluster);
  if (!cluster?.server) throw new Error(`has no cluster ${JSON.stringify(ctx.cluster ?? '')} with a server`);
  if (!cluster.server.startsWith('https://')) throw new Error('names a server that is not https://');
  const user = ctx.user ? kc.getUser(ctx.user) : null;
  const base = path.dirname(file);
  // kubectl's `tokenFile` (client-node reads only `token-file`, once): given to client-node's token-file provider,
  // so a rotated token is picked up as kubectl would
  const rawTokenFile = doc.users?.find((u) => u.name === ctx.user)?.user?.tokenFile;
  if (user && !user.token && typeof rawTokenFile === 'string' && rawTokenFile) {
    const tokenFile = path.resolve(base, rawTokenFile);
    kc.users = kc.users.map((u) => (u === user ? { ...u, authProvider: { name: 'tokenFile', config: { tokenFile } } } : u));
  }
  const u = ctx.user ? kc.getUser(ctx.user) : null;
  const hasCreds = !!u && (!!u.token || !!u.authProvider || !!u.exec || ((!!u.certData || !!u.certFile) && (!!u.keyData || !!u.keyFile)) || !!u.username);
  if (!hasCreds) throw new Error('has no credentials for its user (token, tokenFile, client certificate and key, exec or auth-provider)');
  for (const f of [cluster.caFile, u!.certFile, u!.keyFile, (u!.authProvider?.config as { tokenFile?: string } | undefined)?.tokenFile]) {
    if (f) fs.accessSync(f, fs.constants.R_OK);
  }
  return kc;
}

/** The error of one API call → an answer (HTTP error) or a KubeTransportError (no answer). */
function answerOf(k8s: typeof ClientNode, err: unknown, timeoutMs: number): KubeAnswer {
  if (err instanceof k8s.ApiException) {
    const body = (err as ClientNode.ApiException<unknown>).body;
    // no body (client-node drops a 401's): the library's one-word reason ("Message: Unauthorized"), not its whole
    // message, which repeats the response headers
    const text =
      body === undefined || body === null || body === ''
        ? (/^Message: (.{0,200})$/m.exec(err.message)?.[1] ?? '')
        : (typeof body === 'string' ? body : JSON.stringify(body)).slice(0, 65536);
    const headers = (err as ClientNode.ApiException<unknown>).headers ?? {};
    return { status: (err as ClientNode.ApiException<unknown>).code, text, retryAfter: headers['retry-after'] ?? null };
  }
  const e = err as Error & { cause?: NodeJS.ErrnoException; code?: string };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') throw new KubeTransportError(`timeout after ${timeoutMs} ms`, 'ETIMEDOUT');
  const code = e?.cause?.code ?? e?.code ?? e?.name ?? 'ERROR';
  // the cause's message, not the library's (an ApiException-like message may carry response headers)
  throw new KubeTransportError(String(e?.cause?.code ?? e?.cause?.message ?? e?.message ?? err).slice(0, 200), code);
}

/**
 * Opens the API from a kubeconfig file or the in-cluster service account. Throws an Error whose message says what
 * is wrong with it (fs errors keep their code and path; never a token's value).
 */
export function openKubeApi(opts: KubeApiOptions): KubeApi {
  const k8s = clientNode();
  const build = () => {
    const kc = opts.kubeconfig ? fileConfig(k8s, opts.kubeconfig) : inClusterConfig(k8s, opts.env ?? process.env, opts.inClusterDir ?? IN_CLUSTER_DIR);
    return {
      server: kc.getCurrentCluster()!.server.replace(/\/+$/, ''),
      events: kc.makeApiClient(k8s.EventsV1Api),
      core: kc.makeApiClient(k8s.CoreV1Api),
      apps: kc.makeApiClient(k8s.AppsV1Api),
      batch: kc.makeApiClient(k8s.BatchV1Api),
    };
  };
  let c = build();
  const timeoutMs = opts.timeoutMs;
  // each request gets its own deadline (client-node has no timeout option; its fetch honours the signal)
  const deadline = (): ClientNode.ConfigurationOptions => ({
    middleware: [{ pre: (ctx) => observableOf((ctx.setSignal(AbortSignal.timeout(timeoutMs)), ctx)), post: (res) => observableOf(res) }],
    middlewareMergeStrategy: 'append',
  });
  const call = async (fn: (clients: typeof c) => Promise<{ httpStatusCode: number; data: unknown; headers: Record<string, string> }>): Promise<KubeAnswer> => {
    let answer: KubeAnswer;
    try {
      const r = await fn(c);
      answer = { status: r.httpStatusCode, text: '', retryAfter: r.headers?.['retry-after'] ?? null, object: r.data };
    } catch (err) {
      answer = answerOf(k8s, err, timeoutMs);
    }
    if (answer.status === 401) {
      // the credentials were refused: load them again now rather than at the token-file provider's next 60 s
      // re-read (a rotated service-account token is then used by the retry)
      try {
        c = build();
      } catch {
        /* keep the ones we have; the retry will say 401 again */
      }
    }
    return answer;
  };
  return {
    get server() {
      return c.server;
    },
    createEvent: (namespace, body) => call((a) => a.events.createNamespacedEventWithHttpInfo({ namespace, body: body as ClientNode.EventsV1Event }, deadline())),
    patchEvent: (namespace, name, mergePatch) =>
      call((a) => a.events.patchNamespacedEventWithHttpInfo({ namespace, name, body: mergePatch }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch, deadline()))),
    eventsApiResources: () => call((a) => a.events.getAPIResourcesWithHttpInfo({}, deadline())),
    read: (kind, namespace, name) =>
      call((a) =>
        kind === 'Pod'
          ? a.core.readNamespacedPodWithHttpInfo({ namespace, name }, deadline())
          : kind === 'ReplicaSet'
            ? a.apps.readNamespacedReplicaSetWithHttpInfo({ namespace, name }, deadline())
            : a.batch.readNamespacedJobWithHttpInfo({ namespace, name }, deadline()),
      ),
  };
}

/** client-node's middleware hooks return its Observable (its own rxjs stand-in, read only through toPromise) */
function observableOf<T>(value: T): never {
  return { promise: () => Promise.resolve(value), toPromise: () => Promise.resolve(value) } as never;
}
