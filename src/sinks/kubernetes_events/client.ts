import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import { readKubeconfigFile } from '../../host/kubeconfig';
import { readSecretFileAsync } from '../secret';

/*
 * The API server connection, from a kubeconfig's current context or the in-cluster service account. Plain
 * node:https rather than @kubernetes/client-node: the sink makes two calls (create, merge-patch) and the client
 * library brings ~16 runtime dependencies (undici, ws, openid-client, tar-fs, ...) into the package for them.
 */

export const IN_CLUSTER_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeConnection {
  /** https://host:port, no trailing slash */
  server: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecureSkipVerify: boolean;
  /** a static bearer token */
  token?: string;
  /** a file holding the bearer token, read at each request (service-account tokens rotate) */
  tokenFile?: string;
}

/** Throws an Error whose message names what is wrong (never a token); the definition turns it into a ConfigError. */
export function inClusterConnection(env: NodeJS.ProcessEnv = process.env, dir = IN_CLUSTER_DIR): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT || '443';
  if (!host) throw new Error('is empty and KUBERNETES_SERVICE_HOST is not set: not in a cluster (set a kubeconfig path)');
  const tokenFile = `${dir}/token`;
  fs.accessSync(tokenFile, fs.constants.R_OK);
  const ca = fs.readFileSync(`${dir}/ca.crt`);
  const h = host.includes(':') ? `[${host}]` : host;
  return { server: `https://${h}:${port}`, ca, insecureSkipVerify: false, tokenFile };
}

type Named<T> = { name: string } & T;
interface KubeconfigDoc {
  'current-context'?: string;
  clusters?: Array<Named<{ cluster: Record<string, unknown> }>>;
  users?: Array<Named<{ user: Record<string, unknown> }>>;
  contexts?: Array<Named<{ context: { cluster?: string; user?: string } }>>;
}

/** The current context of a kubeconfig file. Exec/auth-provider plugins are not supported (named as such). */
export function kubeconfigConnection(file: string): KubeConnection {
  const doc = readKubeconfigFile(file) as KubeconfigDoc | null;
  if (!doc || typeof doc !== 'object') throw new Error('is not a kubeconfig (YAML mapping expected)');
  const ctxName = doc['current-context'];
  const ctx = doc.contexts?.find((c) => c.name === ctxName)?.context ?? (doc.contexts?.length === 1 ? doc.contexts[0]!.context : undefined);
  if (!ctx) throw new Error('has no current-context');
  const cluster = doc.clusters?.find((c) => c.name === ctx.cluster)?.cluster;
  if (!cluster || typeof cluster.server !== 'string') throw new Error(`has no cluster ${JSON.stringify(ctx.cluster ?? '')} with a server`);
  const user = (doc.users?.find((u) => u.name === ctx.user)?.user ?? {}) as Record<string, unknown>;
  if (user.exec || user['auth-provider']) throw new Error('uses an exec or auth-provider plugin, which is not supported (use a token, tokenFile or client certificate)');
  const base = file.replace(/[^/]*$/, '');
  const rel = (p: unknown) => (typeof p === 'string' && !p.startsWith('/') ? base + p : (p as string));
  const bytes = (data: unknown, p: unknown): Buffer | undefined =>
    typeof data === 'string' && data ? Buffer.from(data, 'base64') : typeof p === 'string' && p ? fs.readFileSync(rel(p)) : undefined;
  const server = cluster.server.replace(/\/+$/, '');
  if (!server.startsWith('https://')) throw new Error('names a server that is not https://');
  const conn: KubeConnection = {
    server,
    ca: bytes(cluster['certificate-authority-data'], cluster['certificate-authority']),
    insecureSkipVerify: cluster['insecure-skip-tls-verify'] === true,
    cert: bytes(user['client-certificate-data'], user['client-certificate']),
    key: bytes(user['client-key-data'], user['client-key']),
  };
  if (typeof user.token === 'string' && user.token) conn.token = user.token;
  else if (typeof user.tokenFile === 'string' && user.tokenFile) {
    conn.tokenFile = rel(user.tokenFile);
    fs.accessSync(conn.tokenFile, fs.constants.R_OK);
  }
  if (!conn.token && !conn.tokenFile && !(conn.cert && conn.key)) throw new Error('has no credentials for its user (token, tokenFile or client certificate and key)');
  return conn;
}

export interface KubeAnswer {
  status: number;
  text: string;
  retryAfter: string | null;
}

export class KubeTransportError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** One request; network failures and timeouts throw KubeTransportError (retryable), HTTP answers resolve. */
export async function kubeCall(
  conn: KubeConnection,
  method: string,
  urlPath: string,
  body: unknown,
  timeoutMs: number,
  contentType = 'application/json',
): Promise<KubeAnswer> {
  let token = conn.token;
  if (conn.tokenFile) {
    try {
      token = await readSecretFileAsync(conn.tokenFile);
    } catch (err) {
      throw new KubeTransportError(`token file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'TOKEN_FILE');
    }
  }
  const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const u = new URL(conn.server + urlPath);
  return new Promise((resolve, reject) => {
    const req = https.request(
      u,
      {
        method,
        ca: conn.ca,
        cert: conn.cert,
        key: conn.key,
        rejectUnauthorized: !conn.insecureSkipVerify,
        agent: false,
        headers: {
          Accept: 'application/json',
          'User-Agent': `oomtrail (${os.hostname().slice(0, 64)})`,
          ...(token ? { Authorization: `Bearer ${token}` } : {}),
          ...(data ? { 'Content-Type': contentType, 'Content-Length': String(data.length) } : {}),
        },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          // an answer is a Status or the Event: bounded, the rest is not needed
          if (size < 65536) chunks.push(c);
          size += c.length;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), retryAfter: (res.headers['retry-after'] as string) ?? null }));
        res.on('error', (e) => reject(new KubeTransportError(e.message, 'RESPONSE')));
      },
    );
    req.on('timeout', () => req.destroy(new KubeTransportError(`timeout after ${timeoutMs} ms`, 'ETIMEDOUT')));
    req.on('error', (e: NodeJS.ErrnoException) => reject(e instanceof KubeTransportError ? e : new KubeTransportError(e.code ?? e.message, e.code ?? 'ERROR')));
    if (data) req.write(data);
    req.end();
  });
}
