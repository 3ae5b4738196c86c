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

/** The service account's environment and files, checked without client-node. */
function checkInCluster(env: NodeJS.ProcessEnv, dir: string): { server: string; tokenFile: string; caFile: string } {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT || '443';
  if (!host) throw new Error('is empty and KUBERNETES_SERVICE_HOST is not set: not in a cluster (set a kubeconfig path)');
  const tokenFile = path.join(dir, 'token');
  const caFile = path.join(dir, 'ca.crt');
  fs.accessSync(tokenFile, fs.constants.R_OK);
  fs.accessSync(caFile, fs.constants.R_OK);
  const h = host.includes(':') ? `[${host}]` : host;
  return { server: `https://${h}:${port}`, tokenFile, caFile };
}

type Named<T> = { name?: unknown } & T;
interface KubeconfigDoc {
  'current-context'?: unknown;
  clusters?: Array<Named<{ cluster?: Record<string, unknown> }>>;
  users?: Array<Named<{ user?: Record<string, unknown> }>>;
  contexts?: Array<Named<{ context?: { cluster?: unknown; user?: unknown } }>>;
}
const list = <T>(v: T[] | undefined): T[] => (Array.isArray(v) ? v.filter((x) => x && typeof x === 'object') : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v ? v : undefined);

/**
 * A kubeconfig's current context, checked without client-node (the pre-flight runs before the BPF objects load,
 * and client-node costs ~70 MB of RSS): a YAML mapping, a context, an https server, credentials, and every file it
 * names readable (relative paths from the file's directory, as kubectl reads them). Returns kubectl's tokenFile.
 */
function checkKubeconfigFile(file: string): { context: string; tokenFile?: string } {
  const doc = readKubeconfigFile(file) as KubeconfigDoc | null;
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new Error('is not a kubeconfig (YAML mapping expected)');
  const contexts = list(doc.contexts);
  const current = str(doc['current-context']);
  const ctxEntry = contexts.find((c) => c.name === current) ?? (contexts.length === 1 ? contexts[0] : undefined);
  if (!ctxEntry || !str(ctxEntry.name) || !ctxEntry.context) throw new Error('has no current-context');
  const cluster = list(doc.clusters).find((c) => c.name === ctxEntry.context!.cluster)?.cluster;
  if (!cluster || !str(cluster.server)) throw new Error(`has no cluster ${JSON.stringify(str(ctxEntry.context.cluster) ?? '')} with a server`);
  if (!(cluster.server as string).startsWith('https://')) throw new Error('names a server that is not https://');
  const user = list(doc.users).find((u) => u.name === ctxEntry.context!.user)?.user ?? {};
  const has = (k: string) => !!user[k] && (typeof user[k] !== 'string' || user[k] !== '');
  const cert = has('client-certificate') || has('client-certificate-data');
  const key = has('client-key') || has('client-key-data');
  if (!(has('token') || has('tokenFile') || has('exec') || has('auth-provider') || (cert && key) || has('username')))
    throw new Error('has no credentials for its user (token, tokenFile, client certificate and key, exec or auth-provider)');
  const base = path.dirname(file);
  const tokenFile = !has('token') && str(user.tokenFile) ? path.resolve(base, user.tokenFile as string) : undefined;
  for (const f of [str(cluster['certificate-authority']), str(user['client-certificate']), str(user['client-key']), tokenFile]) {
    if (f) fs.accessSync(path.resolve(base, f), fs.constants.R_OK);
  }
  return { context: ctxEntry.name as string, ...(tokenFile ? { tokenFile } : {}) };
}

/**
 * What checkKubeApiConfig or openKubeApi threw, as the rest of a configuration error's line: fs errors name the file
 * (a kubeconfig path or the service-account directory, not a secret) and never its content.
 */
export function kubeApiProblem(err: unknown, kubeconfig: string): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code) return `cannot read ${e.path ?? kubeconfig}: ${e.code}`;
  return kubeconfig ? `${kubeconfig} ${e.message}` : e.message;
}

/**
 * Checks what openKubeApi would use (a kubeconfig, or the in-cluster service account) without loading client-node.
 * Throws as openKubeApi does: an Error saying what is wrong (fs errors keep their code and path; never a token).
 */
export function checkKubeApiConfig(opts: Omit<KubeApiOptions, 'timeoutMs'>): void {
  if (opts.kubeconfig) checkKubeconfigFile(opts.kubeconfig);
  else checkInCluster(opts.env ?? process.env, opts.inClusterDir ?? IN_CLUSTER_DIR);
}

function inClusterConfig(k8s: typeof ClientNode, env: NodeJS.ProcessEnv, dir: string): ClientNode.KubeConfig {
  const { server, tokenFile, caFile } = checkInCluster(env, dir);
  const kc = new k8s.KubeConfig();
  kc.loadFromClusterAndUser(
    { name: 'inCluster', server, caFile, skipTLSVerify: false },
    // client-node's token-file provider: re-read at most 60 s after the last read, as client-go does (kubelet
    // rotates the projected token well before it expires)
    { name: 'inClusterUser', authProvider: { name: 'tokenFile', config: { tokenFile } } },
  );
  return kc;
}

function fileConfig(k8s: typeof ClientNode, file: string): ClientNode.KubeConfig {
  const checked = checkKubeconfigFile(file);
  const kc = new k8s.KubeConfig();
  try {
    kc.loadFromFile(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code) throw err;
    throw new Error(`is not a valid kubeconfig: ${e.message.split('\n')[0]!.slice(0, 200)}`);
  }
  kc.setCurrentContext(checked.context);
  const user = kc.getCurrentUser();
  // kubectl's `tokenFile` (client-node reads only `token-file`, once): given to client-node's token-file provider,
  // so a rotated token is picked up as kubectl would
  if (user && checked.tokenFile) {
    kc.users = kc.users.map((u) => (u === user ? { ...u, authProvider: { name: 'tokenFile', config: { tokenFile: checked.tokenFile } } } : u));
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
