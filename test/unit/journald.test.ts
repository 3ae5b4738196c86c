/*
 * The journald reader's edges, and the ledger's previous boots. `journalctl` here is a stand-in (a
 * shell script printing what journalctl 252 prints, -o json lines copied from a real journal on this
 * host) for cases a real journal cannot be made to show on demand: a journalctl without PCRE2, a
 * message that is not UTF-8, a hang, a huge boot. The real journald is exercised in
 * test/e2e/journald.e2e.test.ts.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dashedBootId, JournaldError, listBoots, listBootsTable, readKernelOomLines } from '../../src/collectors/kmsg/journald';
import { KillLedger } from '../../src/pipeline/ledger';
import { backfillFromJournald } from '../../src/pipeline/journald-backfill';
import type { Logger } from '../../src/observe/logger';
import type { OomRecord } from '../../src/record/record';

const BOOT = '093f2754c0bb40ca81c29e3863e2071f';
const KILLED =
  'Memory cgroup out of memory: Killed process 29407 (dd) total-vm:134048kB, anon-rss:65024kB, file-rss:1668kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:0';
const entry = (i: number, message: string | number[], usec = 12589003500 + i) =>
  JSON.stringify({
    __CURSOR: `s=a52f;i=${i};b=${BOOT}`,
    __REALTIME_TIMESTAMP: String(1796028173403349 + i),
    __MONOTONIC_TIMESTAMP: String(12590247626 + i),
    _BOOT_ID: BOOT,
    _TRANSPORT: 'kernel',
    SYSLOG_FACILITY: '0',
    MESSAGE: message,
    _SOURCE_MONOTONIC_TIMESTAMP: String(usec),
  });

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-journald-unit-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A stand-in journalctl: prints `stdout` for any arguments (or per a case on an argument). */
function fakeJournalctl(name: string, body: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return f;
}

test('boot ids: journald form to /proc form', () => {
  assert.equal(dashedBootId(BOOT), '093f2754-c0bb-40ca-81c2-9e3863e2071f');
  assert.equal(dashedBootId('093f2754-c0bb-40ca-81c2-9e3863e2071f'), '093f2754-c0bb-40ca-81c2-9e3863e2071f');
});

test('--list-boots: oldest first, /proc form; no journal files → JOURNAL_EMPTY; no journalctl → JOURNALCTL_MISSING', async () => {
  const list = JSON.stringify([
    { index: 0, boot_id: BOOT, first_entry: 20, last_entry: 30 },
    { index: -1, boot_id: 'ffffffffffffffffffffffffffffffff', first_entry: 1, last_entry: 2 },
  ]);
  const bin = fakeJournalctl('list', `echo '${list}'`);
  const boots = await listBoots({ directory: '', timeoutMs: 5000, binary: bin });
  assert.deepEqual(boots.map((b) => b.bootId), ['ffffffff-ffff-ffff-ffff-ffffffffffff', '093f2754-c0bb-40ca-81c2-9e3863e2071f']);
  const none = fakeJournalctl('none', 'echo "No journal files were found." >&2; exit 1');
  await assert.rejects(listBoots({ directory: '/nope', timeoutMs: 5000, binary: none }), (e: JournaldError) => e.code === 'JOURNAL_EMPTY');
  await assert.rejects(listBoots({ directory: '', timeoutMs: 5000, binary: path.join(dir, 'absent') }), (e: JournaldError) => e.code === 'JOURNALCTL_MISSING');
});

test('a hung journalctl is killed at the timeout', async () => {
  const bin = fakeJournalctl('hang', 'exec sleep 30');
  const t0 = Date.now();
  await assert.rejects(listBoots({ directory: '', timeoutMs: 300, binary: bin }), (e: JournaldError) => e.code === 'JOURNALCTL_TIMEOUT' && e.retriable);
  assert.ok(Date.now() - t0 < 5000);
});

test('a journalctl that runs out of time is run again with twice the time (the start-up pass); without a stop signal it is not', async () => {
  // the stand-in: --list-boots outlasts the first limit (400 ms) and answers within the second (800 ms); each call is
  // counted in a file
  const calls = path.join(dir, 'slow-calls');
  const list = JSON.stringify([{ index: 0, boot_id: BOOT, first_entry: 20, last_entry: 30 }]);
  const bin = fakeJournalctl(
    'slow',
    `echo "$*" >> ${calls}\ncase "$*" in *--list-boots*) sleep 0.6; echo '${list}';; *) cat <<'EOF'\n${entry(2, KILLED)}\nEOF\n;; esac`,
  );
  const run = async (signal?: AbortSignal) => {
    fs.rmSync(calls, { force: true });
    const logs: string[] = [];
    const log = (msg: string) => void logs.push(msg);
    const logger = { error: log, warn: log, info: log, debug: log } as unknown as Logger;
    const emitted: OomRecord[] = [];
    const n = await backfillFromJournald({
      options: { directory: '', previousBoots: 0, binary: bin },
      logger,
      ledger: KillLedger.open(fs.mkdtempSync(path.join(dir, 'retry-')), dashedBootId(BOOT)),
      facts: { host: 'h', bootId: dashedBootId(BOOT), kernelRelease: '6.1.0', pageSize: 4096, cgroupVersion: 2, agentVersion: '0' },
      beforeAttachUs: Number.POSITIVE_INFINITY,
      toRealtime: (ns) => ns,
      emit: async (r) => void emitted.push(r),
      signal,
      timing: { timeoutMs: 400, pauseMs: 50 },
    });
    return { n, logs, emitted, calls: fs.readFileSync(calls, 'utf8').trim().split('\n') };
  };
  const patient = await run(new AbortController().signal);
  assert.equal(patient.n, 1, patient.logs.join('\n'));
  assert.equal(patient.emitted[0].victim_pid, 29407);
  assert.equal(patient.calls.filter((c) => c.includes('--list-boots')).length, 2, 'listed twice');
  assert.ok(patient.logs.some((l) => /listing the boots of the system journal: journalctl ran longer than 400 ms; trying again in 0 s with 800 ms/.test(l)), patient.logs.join('\n'));
  const once = await run();
  assert.equal(once.n, 0);
  assert.deepEqual(once.calls.filter((c) => c.includes('--list-boots')).length, 1, 'no retry without a stop signal');
  assert.ok(once.logs.some((l) => /cannot read the system journal: journalctl ran longer than 400 ms$/.test(l)), once.logs.join('\n'));
  // stopped during the pause: no second run
  const ac = new AbortController();
  const stopping = run(ac.signal);
  setTimeout(() => ac.abort(), 420);
  const stopped = await stopping;
  assert.equal(stopped.n, 0);
  assert.equal(stopped.calls.filter((c) => c.includes('--list-boots')).length, 1);
});

test('kernel lines: the kernel release from "Linux version", a non-UTF-8 message as bytes, no match (exit 1, silent) is no error', async () => {
  const bytes = [...Buffer.from(KILLED.replace('(dd)', '(d\u00ffd)'), 'latin1')];
  const out = [entry(1, 'Linux version 6.1.0-13-amd64 (debian-kernel@lists.debian.org) #1 SMP'), entry(2, KILLED), entry(3, bytes)].join('\n');
  const bin = fakeJournalctl('lines', `cat <<'EOF'\n${out}\nEOF\nexit 1`);
  const r = await readKernelOomLines('093f2754-c0bb-40ca-81c2-9e3863e2071f', { directory: '', timeoutMs: 5000, binary: bin, maxLines: 100 });
  assert.equal(r.kernelRelease, '6.1.0-13-amd64');
  assert.equal(r.records.length, 2);
  assert.equal(r.records[0].message, KILLED);
  assert.equal(r.records[0].usec, 12589003502);
  assert.equal(r.records[0].seq, 0);
  assert.match(r.records[1].message, /Killed process 29407 \(d\uFFFDd\)/);
  assert.equal(r.truncated, false);
});

test('a journalctl without PCRE2: every kernel line is read and filtered here', async () => {
  const out = [entry(1, 'usb 1-1: new device'), entry(2, KILLED)].join('\n');
  const bin = fakeJournalctl(
    'nopcre',
    `case "$*" in *--grep*) echo "Compiled without pattern matching support" >&2; exit 1;; esac\ncat <<'EOF'\n${out}\nEOF`,
  );
  const r = await readKernelOomLines(BOOT, { directory: '', timeoutMs: 5000, binary: bin, maxLines: 100 });
  assert.deepEqual(r.records.map((x) => x.message), [KILLED]);
});

test('only the kernel: an entry a process wrote to /dev/kmsg (journald stores it with its facility) is refused, whatever journalctl matched', async () => {
  // journald keeps a line written to /dev/kmsg as _TRANSPORT=kernel with the writer's facility (LOG_USER
  // at least: the kernel forces it); a journalctl that ignored the match, or a journal file another
  // host wrote, must not make it a kill
  const user = { ...JSON.parse(entry(1, KILLED.replace('29407', '1'))), SYSLOG_FACILITY: '1' };
  const syslog = { ...JSON.parse(entry(2, KILLED.replace('29407', '2'))), _TRANSPORT: 'syslog' };
  const none = JSON.parse(entry(3, KILLED.replace('29407', '3')));
  delete none._TRANSPORT;
  const out = [JSON.stringify(user), JSON.stringify(syslog), JSON.stringify(none), entry(4, KILLED)].join('\n');
  const bin = fakeJournalctl('user', `cat <<'EOF'\n${out}\nEOF`);
  const r = await readKernelOomLines(BOOT, { directory: '', timeoutMs: 5000, binary: bin, maxLines: 100 });
  assert.deepEqual(r.records.map((x) => x.message), [KILLED]);
});

test('more lines than maxLines: stops there, says so', async () => {
  const out = Array.from({ length: 50 }, (_, i) => entry(i, KILLED.replace('29407', String(1000 + i)))).join('\n');
  const bin = fakeJournalctl('many', `cat <<'EOF'\n${out}\nEOF`);
  const r = await readKernelOomLines(BOOT, { directory: '', timeoutMs: 5000, binary: bin, maxLines: 10 });
  assert.equal(r.truncated, true);
  assert.equal(r.records.length, 10);
});

test("ledger: previous boots' kills are kept only when asked, match only within their boot, and retainBoots prunes them", () => {
  const d = fs.mkdtempSync(path.join(dir, 'ledger-'));
  const l0 = KillLedger.open(d, 'boot-0');
  l0.add(100, 5_000_000, 'e0');
  const l1 = KillLedger.open(d, 'boot-1', true);
  assert.equal(l1.count, 0, "boot 0's kills are not this boot's");
  assert.ok(l1.matches(100, 5_000_000, 'boot-0'));
  assert.ok(!l1.matches(100, 5_000_000), 'not in boot 1');
  assert.ok(l1.has('e0'));
  l1.add(101, 6_000_000, 'e1', '', 'boot-0'); // backfilled from boot 0's journal
  l1.add(102, 7_000_000, 'e2');
  assert.equal(l1.count, 1);
  const again = KillLedger.open(d, 'boot-1', true);
  assert.ok(again.matches(101, 6_000_000, 'boot-0') && again.has('e1') && again.count === 1);
  again.retainBoots([]);
  assert.deepEqual(KillLedger.open(d, 'boot-1', true).otherBoots(), []);
  const dropped = KillLedger.open(d, 'boot-2');
  assert.deepEqual(dropped.otherBoots(), []);
  assert.equal(fs.readFileSync(path.join(d, 'kills.jsonl'), 'utf8'), '', 'without keepOtherBoots only this boot (none yet) is kept');
});

test('--list-boots as a table (systemd < 251 ignores -o json): boot ids oldest first; anything else is not a table', () => {
  const out = [
    '-1 5d3c1e2f7a0b4c3e9f8d7c6b5a4e3d2c Sun 2026-12-06 08:33:01 UTC—Sun 2026-12-06 08:35:10 UTC',
    ' 0 7c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f Sun 2026-12-06 08:36:00 UTC—Sun 2026-12-06 08:37:10 UTC',
    '',
  ].join('\n');
  assert.deepEqual(
    listBootsTable(out)?.map((b) => b.bootId),
    ['5d3c1e2f-7a0b-4c3e-9f8d-7c6b5a4e3d2c', '7c0d9e8f-7a6b-5c4d-3e2f-1a0b9c8d7e6f'],
  );
  assert.equal(listBootsTable('-1 5d3c1e2f7a0b4c3e9f8d7c6b5a4e3d2c x\nNo journal files were found.\n'), null);
  assert.equal(listBootsTable(''), null);
});
