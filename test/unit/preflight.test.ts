import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readRegularFile, unusablePath } from '../../src/host/paths';
import { pemProblem, StartProblems } from '../../src/sinks/secret';
import { attributeProblem } from '../../src/config/load';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-preflight-'));

test('a secret that is a FIFO is refused at once, never read (a read would block until a writer came)', () => {
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const t0 = Date.now();
  assert.throws(() => readRegularFile(fifo, 1024), (err: NodeJS.ErrnoException) => err.code === 'ENOTREG' && /FIFO/.test(err.message));
  assert.ok(Date.now() - t0 < 1000);
  assert.throws(() => readRegularFile(dir, 1024), (err: NodeJS.ErrnoException) => err.code === 'EISDIR');
  assert.throws(() => readRegularFile('/dev/zero', 1024), (err: NodeJS.ErrnoException) => err.code === 'ENOTREG');
  const big = path.join(dir, 'big');
  fs.writeFileSync(big, 'x'.repeat(2000));
  assert.throws(() => readRegularFile(big, 1024), (err: NodeJS.ErrnoException) => err.code === 'EFBIG');
  assert.equal(readRegularFile(big, 4096).length, 2000);
});

test('PEM: garbage between armour lines, a key where a certificate belongs, a key that parses', () => {
  const garbage = Buffer.from('-----BEGIN CERTIFICATE-----\nc2VjcmV0\n-----END CERTIFICATE-----\n');
  assert.match(pemProblem('ca', garbage)!, /does not parse/);
  assert.ok(!pemProblem('ca', garbage)!.includes('c2VjcmV0'), 'the content is never quoted');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const key = Buffer.from(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
  assert.equal(pemProblem('key', key), null);
  assert.match(pemProblem('ca', key)!, /no PEM certificate/);
  assert.match(pemProblem('key', garbage)!, /no PEM private key/);
});

test('a sensitive key never prints the path; every problem names the full key', () => {
  const start = new StartProblems('sinks.loki');
  start.secret('bearer_token_file', path.join(dir, 'tok3n-in-path'), true);
  assert.equal(start.problems[0]!.key, 'sinks.loki.bearer_token_file');
  assert.ok(!start.problems[0]!.message.includes('tok3n-in-path'), start.problems[0]!.message);
});

test('attribution: the key\'s source first, then the sources of the related keys that were set', () => {
  const origin = (k: string) => (k === 'pipeline.retry.initial_ms' ? 'env OOMTRAIL_PIPELINE_RETRY_INITIAL_MS' : k === 'trail.enabled' ? 'file /etc/oomtrail/config.yaml' : 'default');
  const p = attributeProblem({ code: 'CONFIG_INVALID', key: 'pipeline.retry.max_ms', message: 'pipeline.retry.max_ms: must be >= 500', related: ['pipeline.retry.initial_ms'] }, origin);
  assert.equal(p.message, 'default: pipeline.retry.max_ms: must be >= 500 (pipeline.retry.initial_ms from env OOMTRAIL_PIPELINE_RETRY_INITIAL_MS)');
  // a default's problem attributed twice (pre-flight, then run's catch) reads as once
  const d = attributeProblem({ code: 'CONFIG_INVALID', key: 'sinks.kubernetes_events.kubeconfig', message: 'is empty' }, origin);
  assert.equal(d.message, 'default: sinks.kubernetes_events.kubeconfig: is empty');
  assert.equal(attributeProblem(d, origin).message, d.message);
  const q = attributeProblem({ code: 'CONFIG_INVALID', key: 'trail.enabled', message: 'x' }, origin);
  assert.equal(q.message, 'file /etc/oomtrail/config.yaml: trail.enabled: x');
  assert.equal(q.file, '/etc/oomtrail/config.yaml');
});

test('unusable paths are found without creating anything', () => {
  const file = path.join(dir, 'a-file');
  fs.writeFileSync(file, '');
  assert.match(unusablePath(file, 'directory')!, /regular file, not a directory/);
  assert.match(unusablePath(path.join(file, 'sub', 'spool'), 'directory')!, /not a directory/);
  assert.match(unusablePath(dir, 'file')!, /is a directory/);
  assert.equal(unusablePath(path.join(dir, 'new', 'deeper'), 'directory'), null);
  assert.ok(!fs.existsSync(path.join(dir, 'new')), 'nothing created');
});
