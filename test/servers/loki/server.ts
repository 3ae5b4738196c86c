/*
 * A real Grafana Loki for the tests: built by ./setup.sh into the versioned cache, started on 127.0.0.1 with
 * free ports and its own data dir, waited for (GET /ready), stopped by its PID. Never skipped: when Loki cannot be
 * had, startLoki() throws and the test fails with the reason.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CACHE_ROOT, freePort, sleep, stopProcess, track } from '../common';

export const LOKI_VERSION = process.env.LOKI_VERSION ?? '3.7.8';
const HERE = path.resolve(__dirname, '../../../../test/servers/loki');
const CACHE = path.join(CACHE_ROOT, 'loki');

export function lokiBinaryPath(): string {
  return path.join(CACHE, LOKI_VERSION, 'loki');
}

/** The Loki binary; runs setup.sh (a no-op when cached, a ~5 min build when not) and throws if it fails. */
export function lokiBinary(): string {
  const bin = lokiBinaryPath();
  const t0 = Date.now();
  const cached = fs.existsSync(bin);
  // `npm test` starts the cold build in the background (scripts/setup-host.sh); setup.sh then waits on its lock
  if (!cached) process.stderr.write(`[loki] ${bin} not built yet: waiting for setup.sh (a background build logs to ${path.join(os.tmpdir(), 'oomtrail-setup-bg/loki.log')})\n`);
  const r = spawnSync('bash', [path.join(HERE, 'setup.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20 * 60_000 });
  if (r.status !== 0 || !fs.existsSync(bin)) {
    throw new Error(`cannot build Loki ${LOKI_VERSION} (test/servers/loki/setup.sh exit ${r.status}):\n${(r.stdout ?? '') + (r.stderr ?? '')}`.slice(-4000));
  }
  if (!cached) process.stderr.write(`[loki] ready after ${((Date.now() - t0) / 1000).toFixed(0)} s of waiting\n`);
  return bin;
}


export interface LokiOptions {
  /** multi-tenant mode: every request needs X-Scope-OrgID */
  auth?: boolean;
  /** limits_config.reject_old_samples_max_age, default 168h */
  rejectOldSamplesMaxAge?: string;
  /** per-tenant limits_config overrides (runtime config) */
  overrides?: Record<string, Record<string, unknown>>;
}

export interface QueryStream {
  stream: Record<string, string>;
  values: Array<[string, string, Record<string, string>?]>;
}

export class LokiServer {
  child: ChildProcess | null = null;
  private log = '';

  private constructor(
    readonly bin: string,
    readonly dir: string,
    readonly httpPort: number,
    readonly grpcPort: number,
    readonly opts: LokiOptions,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }
  get pid(): number | undefined {
    return this.child?.pid;
  }
  logs(): string {
    return this.log;
  }

  static async start(opts: LokiOptions = {}): Promise<LokiServer> {
    const bin = lokiBinary();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-loki-'));
    const server = new LokiServer(bin, dir, await freePort(), await freePort(), opts);
    const vars: Record<string, string> = {
      AUTH_ENABLED: String(opts.auth ?? false),
      HTTP_PORT: String(server.httpPort),
      GRPC_PORT: String(server.grpcPort),
      DIR: dir,
      REJECT_OLD_SAMPLES_MAX_AGE: opts.rejectOldSamplesMaxAge ?? '168h',
    };
    const tmpl = fs.readFileSync(path.join(HERE, 'loki.yaml.tmpl'), 'utf8');
    fs.writeFileSync(path.join(dir, 'loki.yaml'), tmpl.replace(/\$\{([A-Z_]+)\}/g, (_, k: string) => vars[k] ?? ''));
    fs.writeFileSync(path.join(dir, 'overrides.yaml'), JSON.stringify({ overrides: opts.overrides ?? {} }, null, 2));
    await server.run();
    return server;
  }

  /** Starts the process (again, after stop(): same ports, same data dir) and waits for GET /ready. */
  async run(timeoutMs = 90_000): Promise<void> {
    // a Loki SIGKILLed after stop()'s grace has exitCode null and a signalCode: gone, so it may run again
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) throw new Error('loki already running');
    this.log = '';
    const child = track(
      spawn(this.bin, [`-config.file=${path.join(this.dir, 'loki.yaml')}`, '-ingester.min-ready-duration=0s', '-target=all'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    this.child = child;
    const keep = (d: Buffer): void => {
      this.log = (this.log + d.toString()).slice(-20_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const t0 = Date.now();
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`loki exited (${child.exitCode ?? child.signalCode}) before ready:\n${this.log.slice(-3000)}`);
      try {
        const r = await fetch(`${this.url}/ready`, { signal: AbortSignal.timeout(2000) });
        const text = await r.text();
        if (r.status === 200 && text.trim() === 'ready') break;
      } catch {
        /* not listening yet */
      }
      if (Date.now() - t0 > timeoutMs) {
        await this.stop();
        throw new Error(`loki not ready after ${timeoutMs} ms:\n${this.log.slice(-3000)}`);
      }
      await sleep(200);
    }
    this.readyMs = Date.now() - t0;
  }

  readyMs = 0;

  /** SIGTERM by PID, SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs = 10_000): Promise<void> {
    return stopProcess(this.child, graceMs);
  }

  /** stop() and remove the data dir. */
  async destroy(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private headers(tenant?: string): Record<string, string> {
    return tenant ? { 'X-Scope-OrgID': tenant } : {};
  }

  /** GET /loki/api/v1/query_range (log query): streams with [ns, line, metadata?] values, forward order. */
  async queryRange(query: string, opts: { tenant?: string; startNs?: bigint; endNs?: bigint; limit?: number } = {}): Promise<QueryStream[]> {
    const end = opts.endNs ?? BigInt(Date.now() + 60_000) * 1_000_000n;
    const start = opts.startNs ?? end - 6n * 3600n * 1_000_000_000n;
    const q = new URLSearchParams({
      query,
      start: start.toString(),
      end: end.toString(),
      limit: String(opts.limit ?? 5000),
      direction: 'forward',
    });
    const body = await this.get(`/loki/api/v1/query_range?${q}`, opts.tenant);
    if (body.data.resultType !== 'streams') throw new Error(`expected streams, got ${body.data.resultType}`);
    return body.data.result as QueryStream[];
  }

  /** GET /loki/api/v1/query (instant metric query): vector samples. */
  async queryInstant(query: string, opts: { tenant?: string; timeNs?: bigint } = {}): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
    const q = new URLSearchParams({ query, time: (opts.timeNs ?? BigInt(Date.now()) * 1_000_000n).toString() });
    const body = await this.get(`/loki/api/v1/query?${q}`, opts.tenant);
    if (body.data.resultType !== 'vector') throw new Error(`expected vector, got ${body.data.resultType}`);
    return body.data.result as Array<{ metric: Record<string, string>; value: [number, string] }>;
  }

  /** GET /loki/api/v1/query_range for a metric query: matrix. */
  async queryMatrix(query: string, opts: { tenant?: string; startNs: bigint; endNs: bigint; stepS: number }): Promise<Array<{ metric: Record<string, string>; values: Array<[number, string]> }>> {
    const q = new URLSearchParams({ query, start: opts.startNs.toString(), end: opts.endNs.toString(), step: String(opts.stepS) });
    const body = await this.get(`/loki/api/v1/query_range?${q}`, opts.tenant);
    if (body.data.resultType !== 'matrix') throw new Error(`expected matrix, got ${body.data.resultType}`);
    return body.data.result as Array<{ metric: Record<string, string>; values: Array<[number, string]> }>;
  }

  private async get(pathAndQuery: string, tenant?: string): Promise<{ status: string; data: { resultType: string; result: unknown } }> {
    const r = await fetch(this.url + pathAndQuery, { headers: this.headers(tenant), signal: AbortSignal.timeout(30_000) });
    const text = await r.text();
    if (r.status !== 200) throw new Error(`loki ${pathAndQuery.split('?')[0]}: HTTP ${r.status}: ${text.slice(0, 500)}`);
    return JSON.parse(text);
  }
}

export const startLoki = (opts?: LokiOptions): Promise<LokiServer> => LokiServer.start(opts);
