/*
 * The file sink's healthcheck (`oomtrail check --sinks`, and the start-up line): it answers from looking only,
 * never creates or writes anything, and says unreachable where the first append would fail: the path a directory
 * (EISDIR), not writable (EACCES: checked as an unprivileged user, root bypasses modes), no space (ENOSPC: a real
 * full tmpfs, root only).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FileSink } from '../../src/sinks/file/sink';
import { SmallTmpfs } from '../helpers/tmpfs';

const root = process.getuid?.() === 0;
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-filehealth-'));
const mounts: SmallTmpfs[] = [];
after(() => {
  for (const m of mounts) m.unmount();
  fs.rmSync(tmpRoot, { recursive: true, force: true });
});

/** Every path under `dir` with its size and mtime: what "nothing changed" is checked against. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      const st = fs.lstatSync(p);
      out.push(`${p} ${st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

test('a path that does not exist yet: healthy, and nothing is created (no directory, no file)', async () => {
  const dir = fs.mkdtempSync(path.join(tmpRoot, 'new-'));
  const before = snapshot(dir);
  const h = await new FileSink({ path: path.join(dir, 'a', 'b', 'events.jsonl') }).healthcheck();
  assert.deepEqual(h, { healthy: true });
  assert.deepEqual(snapshot(dir), before, 'the check created nothing');
  // an existing writable file: healthy, untouched
  const file = path.join(dir, 'events.jsonl');
  fs.writeFileSync(file, '{"x":1}\n');
  const mtime = fs.statSync(file).mtimeMs;
  assert.deepEqual(await new FileSink({ path: file }).healthcheck(), { healthy: true });
  assert.equal(fs.readFileSync(file, 'utf8'), '{"x":1}\n');
  assert.equal(fs.statSync(file).mtimeMs, mtime);
});

test('EISDIR: the path is a directory', async () => {
  const dir = fs.mkdtempSync(path.join(tmpRoot, 'isdir-'));
  const before = snapshot(dir);
  const h = await new FileSink({ path: dir }).healthcheck();
  assert.equal(h.healthy, false);
  assert.match(h.detail ?? '', /^EISDIR: .* is a directory$/);
  assert.deepEqual(snapshot(dir), before);
});

test('ENOTDIR: a parent on the path is a file', async () => {
  const dir = fs.mkdtempSync(path.join(tmpRoot, 'notdir-'));
  fs.writeFileSync(path.join(dir, 'plain'), '');
  const h = await new FileSink({ path: path.join(dir, 'plain', 'sub', 'events.jsonl') }).healthcheck();
  assert.equal(h.healthy, false);
  assert.match(h.detail ?? '', /^ENOTDIR: /);
  assert.deepEqual(fs.readdirSync(dir), ['plain']);
});

test('EACCES: a directory the agent user cannot write, or a file it cannot (checked as nobody)', { skip: root ? false : 'needs root to run the check as another user' }, () => {
  const dir = fs.mkdtempSync(path.join(tmpRoot, 'acces-'));
  fs.chmodSync(tmpRoot, 0o755);
  fs.chmodSync(dir, 0o755); // nobody may enter, not write
  const ro = path.join(dir, 'ro.jsonl');
  fs.writeFileSync(ro, '', { mode: 0o644 });
  const before = snapshot(dir);
  const mod = path.resolve(__dirname, '../../src/sinks/file/sink.js');
  const script = `const { FileSink } = require(${JSON.stringify(mod)});
    Promise.all(process.argv.slice(1).map((p) => new FileSink({ path: p }).healthcheck())).then((r) => process.stdout.write(JSON.stringify(r)));`;
  // the pinned runtime lives in root's cache, which nobody cannot enter: nobody runs a link (or copy) of it from tmp
  const node = path.join(tmpRoot, 'node');
  if (!fs.existsSync(node)) {
    try {
      fs.linkSync(process.execPath, node);
    } catch {
      fs.copyFileSync(process.execPath, node);
    }
  }
  const out = execFileSync(node, ['-e', script, path.join(dir, 'new', 'events.jsonl'), ro], { uid: 65534, gid: 65534, encoding: 'utf8' });
  const [newFile, roFile] = JSON.parse(out) as { healthy: boolean; detail?: string }[];
  assert.equal(newFile.healthy, false);
  assert.match(newFile.detail ?? '', /EACCES/);
  assert.equal(roFile.healthy, false);
  assert.match(roFile.detail ?? '', /EACCES/);
  assert.deepEqual(snapshot(dir), before);
});

test('ENOSPC: the filesystem is full (a real full tmpfs)', { skip: root ? false : 'needs root (mounts a small tmpfs)' }, async () => {
  const disk = new SmallTmpfs(fs.mkdtempSync(path.join(tmpRoot, 'full-')), 128);
  disk.mount();
  mounts.push(disk);
  const file = path.join(disk.dir, 'events.jsonl');
  assert.deepEqual(await new FileSink({ path: file }).healthcheck(), { healthy: true }, 'healthy with space');
  disk.fill();
  const before = snapshot(disk.dir);
  for (const p of [file, path.join(disk.dir, 'sub', 'events.jsonl')]) {
    const h = await new FileSink({ path: p }).healthcheck();
    assert.equal(h.healthy, false, p);
    assert.match(h.detail ?? '', /^ENOSPC: /);
  }
  assert.deepEqual(snapshot(disk.dir), before, 'the check wrote nothing');
  disk.free();
  assert.deepEqual(await new FileSink({ path: file }).healthcheck(), { healthy: true }, 'healthy again once freed');
});
