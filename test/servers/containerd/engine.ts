/*
 * A private containerd for tests: Debian's containerd 1.6 with its own root, state and socket (the CRI
 * plugin off: no kubelet here), stopped by its PID. The image is an OCI layout built locally from the cached
 * debootstrap rootfs and imported with `ctr images import`: no registry is contacted.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { CACHE } from '../docker/engine';

const pexec = promisify(execFile);
export const CONTAINERD = '/usr/bin/containerd';
export const CTR = '/usr/bin/ctr';
export const IMAGE = 'oomtrail-test/debian:bookworm';

export interface Containerd {
  socket: string;
  ctr(args: string[], opts?: { namespace?: string; timeoutMs?: number }): Promise<string>;
  log(): string;
  stop(): Promise<void>;
}

export async function startContainerd(root: string): Promise<Containerd> {
  if (!fs.existsSync(CONTAINERD)) throw new Error('containerd missing (Debian package containerd)');
  const run = `/run/oomtrail-containerd-${process.pid}`;
  fs.mkdirSync(run, { recursive: true });
  fs.mkdirSync(root, { recursive: true });
  const socket = path.join(run, 'containerd.sock');
  const config = path.join(run, 'config.toml');
  fs.writeFileSync(
    config,
    [
      'version = 2',
      `root = ${JSON.stringify(root)}`,
      `state = ${JSON.stringify(path.join(run, 'state'))}`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = ${JSON.stringify(socket)}`,
      '[ttrpc]',
      `  address = ${JSON.stringify(socket + '.ttrpc')}`,
    ].join('\n') + '\n',
  );
  const child: ChildProcess = spawn(CONTAINERD, ['--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  const ctr = async (args: string[], opts: { namespace?: string; timeoutMs?: number } = {}) =>
    (await pexec(CTR, ['-a', socket, '-n', opts.namespace ?? 'default', ...args], { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20 })).stdout;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`containerd exited ${child.exitCode}:\n${log.slice(-3000)}`);
    try {
      await ctr(['version'], { timeoutMs: 5000 });
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGTERM');
        throw new Error(`containerd not ready after 30 s:\n${log.slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    socket,
    ctr,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(t);
      }
      const mounts = fs
        .readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[4])
        .filter((m) => m && (m.startsWith(run + '/') || m.startsWith(root + '/')))
        .sort()
        .reverse();
      for (const m of mounts) await pexec('umount', ['-l', m]).catch(() => undefined);
      fs.rmSync(run, { recursive: true, force: true });
    },
  };
}

/** The agent's `enrich.runtime` section (YAML) naming this containerd and its `namespaces`, keeping label `keep`. */
export function enrichYaml(c: Containerd, namespaces: string[], keep: string): string {
  return ['enrich:', '  runtime:', '    runtimes: containerd', `    containerd_socket: ${JSON.stringify(c.socket)}`, `    containerd_namespaces: ${namespaces.join(',')}`, `    labels: ${keep}`].join('\n');
}

/** Kills, then deletes each container's task and the container, in every namespace given; what is not there is skipped. */
export async function removeContainers(c: Containerd, ids: readonly string[], namespaces: readonly string[]): Promise<void> {
  for (const id of ids) {
    for (const namespace of namespaces) {
      await c.ctr(['task', 'kill', '-s', 'KILL', id], { namespace }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 100));
      await c.ctr(['task', 'rm', '-f', id], { namespace }).catch(() => undefined);
      await c.ctr(['containers', 'rm', id], { namespace }).catch(() => undefined);
    }
  }
}

/**
 * An OCI image layout tarball of the cached Debian rootfs (one uncompressed layer), built once under `dir`,
 * imported into `namespace` unless there already.
 */
export async function ensureImage(c: Containerd, namespace: string, dir: string): Promise<void> {
  if ((await c.ctr(['images', 'ls', '-q'], { namespace })).split('\n').includes(IMAGE)) return;
  const tarball = path.join(dir, 'debian-oci.tar');
  if (!fs.existsSync(tarball)) {
    const layout = path.join(dir, 'oci');
    const blobs = path.join(layout, 'blobs/sha256');
    fs.mkdirSync(blobs, { recursive: true });
    const rootfs = path.join(CACHE, 'rootfs.tar');
    const layerDigest = await sha256File(rootfs);
    fs.copyFileSync(rootfs, path.join(blobs, layerDigest));
    const blob = (doc: unknown) => {
      const b = Buffer.from(JSON.stringify(doc));
      const d = crypto.createHash('sha256').update(b).digest('hex');
      fs.writeFileSync(path.join(blobs, d), b);
      return { digest: `sha256:${d}`, size: b.length };
    };
    const config = blob({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/bash'], Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
    });
    const manifest = blob({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: fs.statSync(rootfs).size }],
    });
    fs.writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    fs.writeFileSync(
      path.join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'io.containerd.image.name': IMAGE, 'org.opencontainers.image.ref.name': 'bookworm' } }],
      }),
    );
    await pexec('tar', ['-C', layout, '-cf', tarball + '.tmp', '.']);
    fs.renameSync(tarball + '.tmp', tarball);
    fs.rmSync(layout, { recursive: true, force: true });
  }
  await c.ctr(['images', 'import', tarball], { namespace, timeoutMs: 300_000 });
}

async function sha256File(file: string): Promise<string> {
  const h = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}
