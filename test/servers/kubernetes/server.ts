/*
 * A real Kubernetes control plane for the tests: etcd and kube-apiserver, built by ./setup.sh into the versioned
 * cache, started on 127.0.0.1 with free ports and a temp dir, waited for (etcd /health, apiserver /readyz), stopped
 * by their PIDs. RBAC is on (Node,RBAC), service-account tokens are signed with a key pair generated here, the
 * serving certificate comes from a CA generated here, and the test's admin is a static token in group
 * system:masters. No controller-manager, scheduler or kubelet: objects exist, nothing reconciles them (e.g. no
 * namespace gets its "default" ServiceAccount by itself). Never skipped: when it cannot be had, start() throws.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { CACHE_ROOT, freePort, sleep, stopProcess, track } from '../common';

export const KUBERNETES_VERSION = process.env.KUBERNETES_VERSION ?? '1.37.2';
const HERE = path.resolve(__dirname, '../../../../test/servers/kubernetes');
const CACHE = path.join(CACHE_ROOT, 'kubernetes', KUBERNETES_VERSION);

/** The kube-apiserver and etcd binaries; runs setup.sh (a no-op when cached, a long build when not), throws if it fails. */
export function kubernetesBinaries(): { apiserver: string; etcd: string } {
  const bins = { apiserver: path.join(CACHE, 'kube-apiserver'), etcd: path.join(CACHE, 'etcd') };
  const r = spawnSync('bash', [path.join(HERE, 'setup.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30 * 60_000 });
  if (r.status !== 0 || !fs.existsSync(bins.apiserver) || !fs.existsSync(bins.etcd)) {
    throw new Error(`cannot build kube-apiserver ${KUBERNETES_VERSION} / etcd (test/servers/kubernetes/setup.sh exit ${r.status}):\n${(r.stdout ?? '') + (r.stderr ?? '')}`.slice(-4000));
  }
  return bins;
}

export interface KubeResponse {
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  text: string;
}

/** Where the API server is and how to reach it: what a client (or the agent's sink) needs. */
export interface KubeAccess {
  url: string;
  /** PEM of the CA that signed the serving certificate */
  ca: string;
  /** bearer token of the test's admin (group system:masters) */
  adminToken: string;
}

/** resource path of the kinds the tests create (namespaced ones under /namespaces/<ns>/) */
const KINDS: Record<string, { group: string; resource: string; namespaced: boolean }> = {
  Namespace: { group: 'api/v1', resource: 'namespaces', namespaced: false },
  ServiceAccount: { group: 'api/v1', resource: 'serviceaccounts', namespaced: true },
  Pod: { group: 'api/v1', resource: 'pods', namespaced: true },
  Secret: { group: 'api/v1', resource: 'secrets', namespaced: true },
  ConfigMap: { group: 'api/v1', resource: 'configmaps', namespaced: true },
  Event: { group: 'apis/events.k8s.io/v1', resource: 'events', namespaced: true },
  ClusterRole: { group: 'apis/rbac.authorization.k8s.io/v1', resource: 'clusterroles', namespaced: false },
  ClusterRoleBinding: { group: 'apis/rbac.authorization.k8s.io/v1', resource: 'clusterrolebindings', namespaced: false },
  Role: { group: 'apis/rbac.authorization.k8s.io/v1', resource: 'roles', namespaced: true },
  RoleBinding: { group: 'apis/rbac.authorization.k8s.io/v1', resource: 'rolebindings', namespaced: true },
  ReplicaSet: { group: 'apis/apps/v1', resource: 'replicasets', namespaced: true },
  Deployment: { group: 'apis/apps/v1', resource: 'deployments', namespaced: true },
  DaemonSet: { group: 'apis/apps/v1', resource: 'daemonsets', namespaced: true },
  Job: { group: 'apis/batch/v1', resource: 'jobs', namespaced: true },
};

/** The collection URL path of `kind` (in `namespace` when namespaced). */
export function collectionPath(kind: string, namespace?: string): string {
  const k = KINDS[kind];
  if (!k) throw new Error(`no path known for kind ${kind}`);
  if (k.namespaced && !namespace) throw new Error(`${kind} is namespaced: namespace missing`);
  return k.namespaced ? `/${k.group}/namespaces/${namespace}/${k.resource}` : `/${k.group}/${k.resource}`;
}

/** One HTTPS request to the API server, verified against `access.ca`; JSON in and out. */
export function kubeRequest(
  access: KubeAccess,
  method: string,
  urlPath: string,
  opts: { token?: string; body?: unknown; contentType?: string; timeoutMs?: number } = {},
): Promise<KubeResponse> {
  const data = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
  const u = new URL(urlPath, access.url);
  return new Promise((resolve, reject) => {
    const req = https.request(
      u,
      {
        method,
        ca: access.ca,
        agent: false,
        headers: {
          Accept: 'application/json',
          ...(opts.token ? { Authorization: `Bearer ${opts.token}` } : {}),
          ...(data ? { 'Content-Type': opts.contentType ?? 'application/json', 'Content-Length': String(data.length) } : {}),
        },
        timeout: opts.timeoutMs ?? 15_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = null;
          try {
            body = JSON.parse(text);
          } catch {
            /* /readyz and friends answer text */
          }
          resolve({ status: res.statusCode ?? 0, body, text });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: timeout`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export class KubeApiServer implements KubeAccess {
  etcd: ChildProcess | null = null;
  apiserver: ChildProcess | null = null;
  private etcdLog = '';
  private apiLog = '';
  readonly adminToken = crypto.randomBytes(24).toString('hex');
  ca = '';
  readyMs = 0;

  private constructor(
    readonly bins: { apiserver: string; etcd: string },
    readonly dir: string,
    readonly port: number,
    readonly etcdClientPort: number,
    readonly etcdPeerPort: number,
  ) {}

  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }
  get access(): KubeAccess {
    return { url: this.url, ca: this.ca, adminToken: this.adminToken };
  }
  logs(): string {
    return `--- etcd ---\n${this.etcdLog.slice(-3000)}\n--- kube-apiserver ---\n${this.apiLog.slice(-6000)}`;
  }

  static async start(): Promise<KubeApiServer> {
    const bins = kubernetesBinaries();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-kube-'));
    const server = new KubeApiServer(bins, dir, await freePort(), await freePort(), await freePort());
    try {
      server.writeCredentials();
      await server.run();
    } catch (err) {
      await server.destroy();
      throw err;
    }
    return server;
  }

  /** A CA, the serving cert it signs (127.0.0.1, localhost), the service-account key pair, the admin token file. */
  private writeCredentials(): void {
    const d = this.dir;
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=oomtrail-test-ca'], d);
    fs.writeFileSync(path.join(d, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n');
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'apiserver.key', '-out', 'apiserver.csr', '-subj', '/CN=kube-apiserver'], d);
    openssl(['x509', '-req', '-in', 'apiserver.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'apiserver.crt', '-days', '2', '-extfile', 'san.ext'], d);
    this.ca = fs.readFileSync(path.join(d, 'ca.crt'), 'utf8');
    // the key the API server signs service-account tokens (TokenRequest) with, and verifies them by
    const sa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(path.join(d, 'sa.key'), sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    fs.writeFileSync(path.join(d, 'sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }));
    // token,user,uid,"group": the test's cluster admin
    fs.writeFileSync(path.join(d, 'tokens.csv'), `${this.adminToken},oomtrail-test-admin,oomtrail-test-admin,"system:masters"\n`, { mode: 0o600 });
  }

  private spawnLogged(bin: string, args: string[], which: 'etcd' | 'api'): ChildProcess {
    const child = track(spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: this.dir }));
    const keep = (d: Buffer): void => {
      if (which === 'etcd') this.etcdLog = (this.etcdLog + d.toString()).slice(-20_000);
      else this.apiLog = (this.apiLog + d.toString()).slice(-40_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    return child;
  }

  /** Starts etcd then kube-apiserver (again, after stop(): same ports, same data) and waits for /readyz. */
  async run(timeoutMs = 120_000): Promise<void> {
    const t0 = Date.now();
    const d = this.dir;
    const peer = `http://127.0.0.1:${this.etcdPeerPort}`;
    const client = `http://127.0.0.1:${this.etcdClientPort}`;
    this.etcd = this.spawnLogged(
      this.bins.etcd,
      [
        '--name=test',
        `--data-dir=${path.join(d, 'etcd')}`,
        `--listen-client-urls=${client}`,
        `--advertise-client-urls=${client}`,
        `--listen-peer-urls=${peer}`,
        `--initial-advertise-peer-urls=${peer}`,
        `--initial-cluster=test=${peer}`,
        // a throwaway store: durability across power loss is not what the tests check
        '--unsafe-no-fsync',
      ],
      'etcd',
    );
    await this.waitFor('etcd', this.etcd, timeoutMs, async () => {
      const r = await fetch(`${client}/health`, { signal: AbortSignal.timeout(2000) });
      return r.status === 200 && ((await r.json()) as { health?: string }).health === 'true';
    });
    await this.runApiServer(timeoutMs - (Date.now() - t0));
    this.readyMs = Date.now() - t0;
  }

  /** Starts kube-apiserver alone (etcd running: after stopApiServer(), an API outage) and waits for /readyz. */
  async runApiServer(timeoutMs = 120_000): Promise<void> {
    if (this.apiserver && this.apiserver.exitCode === null && this.apiserver.signalCode === null) throw new Error('kube-apiserver already running');
    const d = this.dir;
    const client = `http://127.0.0.1:${this.etcdClientPort}`;
    this.apiLog = '';
    this.apiserver = this.spawnLogged(
      this.bins.apiserver,
      [
        `--etcd-servers=${client}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        // the default (lease) reconciler refuses a loopback advertise address; no pod here needs the
        // `kubernetes` Service's endpoints, so none are kept
        '--endpoint-reconciler-type=none',
        `--secure-port=${this.port}`,
        `--tls-cert-file=${path.join(d, 'apiserver.crt')}`,
        `--tls-private-key-file=${path.join(d, 'apiserver.key')}`,
        `--token-auth-file=${path.join(d, 'tokens.csv')}`,
        '--authorization-mode=Node,RBAC',
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${path.join(d, 'sa.pub')}`,
        `--service-account-signing-key-file=${path.join(d, 'sa.key')}`,
        '--service-cluster-ip-range=10.96.0.0/16',
        '--profiling=false',
      ],
      'api',
    );
    await this.waitFor('kube-apiserver', this.apiserver, timeoutMs, async () => {
      const r = await kubeRequest(this, 'GET', '/readyz', { token: this.adminToken, timeoutMs: 2000 });
      return r.status === 200 && r.text.trim() === 'ok';
    });
  }

  /** Stops kube-apiserver only (etcd and its data stay): the API is unreachable until runApiServer(). */
  stopApiServer(graceMs = 15_000): Promise<void> {
    return stopProcess(this.apiserver, graceMs);
  }

  private async waitFor(name: string, child: ChildProcess, timeoutMs: number, ready: () => Promise<boolean>): Promise<void> {
    const t0 = Date.now();
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before ready:\n${this.logs()}`);
      try {
        if (await ready()) return;
      } catch {
        /* not listening yet */
      }
      if (Date.now() - t0 > timeoutMs) throw new Error(`${name} not ready after ${timeoutMs} ms:\n${this.logs()}`);
      await sleep(200);
    }
  }

  /** kube-apiserver first (it holds etcd connections), then etcd: SIGTERM by PID, SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    await stopProcess(this.apiserver, graceMs);
    await stopProcess(this.etcd, graceMs);
  }

  /** stop() and remove the temp dir (etcd data, keys, certs). */
  async destroy(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** A request as the admin (or as `token`). */
  request(method: string, urlPath: string, opts: { token?: string; body?: unknown; contentType?: string } = {}): Promise<KubeResponse> {
    return kubeRequest(this, method, urlPath, { ...opts, token: opts.token ?? this.adminToken });
  }

  /** POST `obj` to its collection as the admin; throws unless 201 (or 409 when `existingOk`). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async create(obj: any, opts: { existingOk?: boolean } = {}): Promise<any> {
    const r = await this.request('POST', collectionPath(obj.kind, obj.metadata?.namespace), { body: obj });
    if (r.status === 201 || r.status === 200) return r.body;
    if (r.status === 409 && opts.existingOk) return r.body;
    throw new Error(`create ${obj.kind} ${obj.metadata?.namespace ?? ''}/${obj.metadata?.name}: HTTP ${r.status}: ${r.text.slice(0, 500)}`);
  }

  /** A token for a ServiceAccount, minted by the TokenRequest API (signed with the test's key). */
  async serviceAccountToken(namespace: string, name: string, expirationSeconds = 3600): Promise<string> {
    const r = await this.request('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds } },
    });
    if (r.status !== 201 || typeof r.body?.status?.token !== 'string') throw new Error(`TokenRequest ${namespace}/${name}: HTTP ${r.status}: ${r.text.slice(0, 500)}`);
    return r.body.status.token as string;
  }
}

export const startKubeApiServer = (): Promise<KubeApiServer> => KubeApiServer.start();
