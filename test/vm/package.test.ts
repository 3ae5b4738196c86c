/*
 * The package end to end on a real systemd host (issue 28 parts 3 and 4): `npm run package` builds the .deb twice
 * (this version and a higher one), and one guest session per release — Debian 11's userland on its 5.10 kernel,
 * Debian 12's on 6.1 — boots a debootstrapped root disk with systemd as PID 1 (run.sh --rootfs) and runs
 * test/vm/package-guest.sh: install without network → active; a real kill; stop, 3 kills, a real reboot of the
 * same disk → the 3 come from the persistent journal with the previous boot's id; they and 2 more kills wait in the
 * spool of a webhook sink that is down → upgrade → receiver up → the 5 arrive once; purge → nothing left. The guest only acts and
 * collects; everything is asserted here, against the kernel's own lines (/dev/kmsg dumped in the guest).
 * OOMTRAIL_VM_KERNELS (comma-separated releases) narrows it like the matrix; OOMTRAIL_VM_PKG_OLD/_NEW take two
 * prebuilt packages (old, higher version) instead of building them.
 * In `npm test` it runs niced beside the host files (scripts/test.sh): one session is ~4–5 min of TCG per release (289 s on Debian 11, 239 s on 12);
 * the two root disks are built in the background while the host tests run (scripts/setup-host.sh).
 * OOMTRAIL_VM_PACKAGE=0 leaves it out; `npm run test:package-vm` runs it alone.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseKilled, parseKmsgLine, type KernelKillReport, type KmsgRecord } from '../../src/collectors/kmsg/kmsg';
import { kmsgEventId } from '../../src/pipeline/assemble/enrich';
import type { OomRecord } from '../../src/record/record';
import { builtDeb } from '../helpers/deb';
import { readSpoolDir } from '../helpers/spool';

const REPO = path.resolve(__dirname, '../../..');
const RUN = path.join(REPO, 'test/vm/run.sh');
const HOOK_PORT = 18089;
const MAX_EXPOSURE = 2.5;
/** The reclaim collector's raw tracepoints (src/collectors/reclaim/collector.ts), all present on 5.10 and 6.1. */
const RECLAIM_TRACEPOINTS = [
  'mm_vmscan_direct_reclaim_begin',
  'mm_vmscan_direct_reclaim_end',
  'mm_vmscan_memcg_reclaim_begin',
  'mm_vmscan_memcg_reclaim_end',
  'mark_victim',
  'sched_process_exit',
  'finish_task_reaping',
];

interface Release {
  release: 'bullseye' | 'bookworm';
  label: string;
  debian: RegExp;
  uname: RegExp;
}
const RELEASES: Release[] = [
  { release: 'bullseye', label: 'Debian 11 on 5.10', debian: /^11\./, uname: /^5\.10\./ },
  { release: 'bookworm', label: 'Debian 12 on 6.1', debian: /^12\./, uname: /^6\.1\./ },
];
const only = process.env.OOMTRAIL_VM_KERNELS?.split(',').map((k) => k.trim());

const isKill = (r: OomRecord) => (r.kind ?? 'oom_kill') === 'oom_kill';
const readJsonl = (f: string): OomRecord[] =>
  fs.existsSync(f) ? fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as OomRecord) : [];

/** A `cat /dev/kmsg` dump: one record per line, continuation (KEY=value) lines start with a space. */
function readKmsgDump(file: string): KmsgRecord[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith(' '))
    .map((l) => parseKmsgLine(l))
    .filter((r): r is KmsgRecord => r !== null);
}

/** The kernel's "Killed process" lines of `comm` in log order. */
function killLines(records: KmsgRecord[], comm: string): { usec: number; line: KernelKillReport }[] {
  const out: { usec: number; line: KernelKillReport }[] = [];
  for (const r of records) {
    const k = parseKilled(r.message);
    if (k && k.comm === comm) out.push({ usec: r.usec, line: k });
  }
  return out;
}

function assertEqualsLine(r: OomRecord, k: { line: KernelKillReport }, what: string): void {
  assert.deepEqual(
    [r.victim_pid, r.victim_comm, r.victim_uid, r.victim_total_vm_kb, r.victim_anon_rss_kb, r.victim_file_rss_kb, r.victim_shmem_rss_kb, r.victim_pgtables_kb, r.victim_oom_score_adj],
    [k.line.pid, k.line.comm, k.line.uid, k.line.totalVmKb, k.line.anonRssKb, k.line.fileRssKb, k.line.shmemRssKb, k.line.pgtablesKb, k.line.oomScoreAdj],
    `${what}: the record equals the kernel's "Killed process" line`,
  );
}

/** Seconds from systemd's "Starting" to its "Started" of the unit in a `-o short-monotonic` journal (the first pair). */
function startSeconds(log: string): string {
  const at = (what: string) => new RegExp(`^\\[\\s*([\\d.]+)\\] \\S+ systemd\\[1\\]: ${what} oomtrail`, 'm').exec(log)?.[1];
  const a = at('Starting');
  const b = at('Started');
  return a && b ? (Number(b) - Number(a)).toFixed(1) : '?';
}

function runGuest(release: string, diskDir: string, collect: string): Promise<{ code: number | null; out: string; seconds: number }> {
  const t0 = Date.now();
  const args = [RUN, '--rootfs', '--kernel', release, '--timeout', '1500', '--disk-dir', diskDir, '--collect', collect, '--', 'sh', '/vmtest/package-guest.sh'];
  const child = spawn('bash', args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const progress = (d: Buffer) => {
    out += d.toString();
    for (const line of d.toString().split('\n')) {
      if (/^(\[vm-run\]|\[build-rootfs\]|\[rootinit\]|\[fetch-kernel\]|\[vm\] \[guest\])/.test(line)) process.stderr.write(line + '\n');
    }
  };
  child.stdout.on('data', progress);
  child.stderr.on('data', progress);
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, out, seconds: (Date.now() - t0) / 1000 })));
}

const OPT_OUT = process.env.OOMTRAIL_VM_PACKAGE === '0' ? 'OOMTRAIL_VM_PACKAGE=0' : false;

describe('the .deb on a systemd-booted Debian guest: install, kill, reboot, upgrade, purge', { skip: OPT_OUT }, () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-pkgvm-'));
  const disk = path.join(work, 'disk');
  const pin = fs.readFileSync(path.join(REPO, 'runtime/node.version'), 'utf8').trim();
  const baseVersion = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
  const newVersion = `${baseVersion}+vmtest1`;
  let oldVersion = baseVersion;
  let upgradeVersion = newVersion;

  before(async () => {
    fs.mkdirSync(disk, { recursive: true });
    let oldDeb = process.env.OOMTRAIL_VM_PKG_OLD;
    let newDeb = process.env.OOMTRAIL_VM_PKG_NEW;
    if (!oldDeb || !newDeb) {
      // `npm run package` of this tree, twice (cached per input content, shared with the host's package test): the
      // upgrade needs a package with a higher version
      const a = await builtDeb();
      const b = await builtDeb(newVersion);
      process.stderr.write(`[package.test] packages: ${a.built ? `built in ${(a.ms / 1000).toFixed(1)} s` : 'cached'}, ${b.built ? `built in ${(b.ms / 1000).toFixed(1)} s` : 'cached'}\n`);
      oldDeb = a.deb;
      newDeb = b.deb;
    }
    assert.ok(oldDeb && newDeb, 'two packages');
    const ver = (deb: string) => execFileSync('dpkg-deb', ['-f', deb, 'Version'], { encoding: 'utf8' }).trim();
    oldVersion = ver(oldDeb);
    upgradeVersion = ver(newDeb);
    assert.equal(execFileSync('dpkg', ['--compare-versions', ver(newDeb), 'gt', oldVersion]).length, 0, 'the second package is newer');
    fs.copyFileSync(oldDeb, path.join(disk, path.basename(oldDeb)));
    fs.copyFileSync(newDeb, path.join(disk, path.basename(newDeb)));
    fs.copyFileSync(path.join(REPO, 'test/vm/package-guest.sh'), path.join(disk, 'package-guest.sh'));
    fs.copyFileSync(path.join(REPO, 'test/vm/receiver.js'), path.join(disk, 'receiver.js'));
    fs.writeFileSync(path.join(disk, 'vars.sh'), `PKG_OLD=${path.basename(oldDeb)}\nPKG_NEW=${path.basename(newDeb)}\nHOOK_PORT=${HOOK_PORT}\nNEW_VERSION=${ver(newDeb)}\n`);
  });

  for (const rel of RELEASES) {
    test(`${rel.label}: ${rel.release} userland, systemd as PID 1`, { skip: only && !only.includes(rel.release) ? 'not in OOMTRAIL_VM_KERNELS' : false }, async (t) => {
      const collect = path.join(work, `out-${rel.release}`);
      const r = await runGuest(rel.release, disk, collect);
      const O = path.join(collect, 'out');
      const read = (f: string) => (fs.existsSync(path.join(O, f)) ? fs.readFileSync(path.join(O, f), 'utf8').trim() : `<no ${f}>`);
      const tail = r.out.split('\n').slice(-80).join('\n');
      const boots = [...r.out.matchAll(/OOMTRAIL-VM-BOOT n=(\d+)/g)].map((m) => Number(m[1]));
      const timings = /\[vm-run\] timings: .*/.exec(r.out)?.[0] ?? '';
      t.diagnostic(`${rel.release}: VM session ${r.seconds.toFixed(0)} s; ${timings}`);
      t.diagnostic(`${rel.release} steps (guest uptime, boot):\n${read('steps')}`);
      assert.equal(read('errors'), '<no errors>', `the guest reported failures:\n${read('errors')}\n--- output tail:\n${tail}`);
      assert.equal(r.code, 0, `run.sh exit ${r.code}\n${tail}`);
      assert.deepEqual(boots, [1, 2], 'two boots of the same disk');

      // the guest is what it claims
      assert.match(read('uname'), rel.uname);
      assert.match(read('debian_version'), rel.debian);
      assert.equal(read('cgroupfs'), 'cgroup2fs', 'systemd runs the unified cgroup hierarchy');
      assert.match(read('system-state.1'), /^(running|degraded)$/m);
      if (rel.release === 'bullseye') {
        // Debian 11 has no libbpf1: the agent can only run on the one it brings
        assert.doesNotMatch(read('host-libbpf'), /libbpf1 \S+ install ok installed|libbpf\.so\.1/, read('host-libbpf'));
      }

      // install: nothing fetched, only our package new, enabled and started by the postinst
      assert.equal(read('install.rc'), '0', read('install.log'));
      assert.match(read('install.log'), /^Need to get 0 B\//m, 'apt downloads nothing');
      assert.doesNotMatch(read('install.log'), /^(Get:\d+ (?!\/vmtest\/)|Err:|Ign:)/m, 'apt fetched nothing but the local file');
      assert.match(read('install.log'), /NEW packages will be installed:\s*\n\s+oomtrail\s*\n/, 'no dependency was installed');
      assert.equal(read('version.install'), oldVersion);
      assert.equal(read('active.install'), 'active', read('show.install'));
      assert.match(read('show.install'), /^NRestarts=0$/m, `the unit was restarted:\n${read('show.install')}`);

      // the runtime and the library the agent process really mapped
      assert.equal(read('exe'), '/usr/lib/oomtrail/bin/node');
      assert.equal(read('node_version'), `v${pin}`, 'the agent runs the pinned Node.js LTS');
      const libbpf = [...new Set(read('maps').split('\n').filter((l) => /libbpf/.test(l)).map((l) => l.trim().split(/\s+/).slice(5).join(' ')))];
      assert.deepEqual(libbpf, ['/usr/lib/oomtrail/lib/libbpf.so.1'], `the libbpf the agent mapped:\n${libbpf.join('\n')}`);

      const exposure = /Overall exposure level for oomtrail\.service:\s*([0-9.]+)/.exec(read('security'));
      assert.ok(exposure, read('security'));
      assert.ok(Number(exposure[1]) <= MAX_EXPOSURE, `systemd-analyze security: ${exposure[1]} > ${MAX_EXPOSURE}`);
      t.diagnostic(`${rel.release}: exposure ${exposure[1]}, ${read('systemd_version')}; the unit's start (its ExecStartPre check) took ${startSeconds(read('agent.1.log'))} s, TimeoutStartSec 300 s`);

      // the reclaim collector runs under the packaged unit too: every raw tracepoint attached (Debian's
      // perf_event_paranoid=3 refused its former perf-event tracepoints to the unit: EACCES on both releases)
      assert.match(read('agent.1.log'), new RegExp(`reclaim: attached ${RECLAIM_TRACEPOINTS.join(', ')}$`, 'm'), read('agent.1.log'));
      assert.doesNotMatch(read('agent.1.log'), /reclaim collector not running|reclaim: \S+ unavailable/);
      // oomtrail check (the unit's ExecStartPre, in the journal) names why the kprobe hook was refused: Debian's
      // perf_event_paranoid=3 refuses perf_event_open without CAP_SYS_ADMIN on a kernel with kprobes (it said "no
      // kprobes"); tracefs is found (stat(), which honours CAP_DAC_READ_SEARCH; it said "not mounted"); the alloc
      // collector could run (a raw tracepoint; it got EACCES from perf_event_open)
      assert.match(read('agent.1.log'), /kprobes\s+yes$/m, read('agent.1.log'));
      assert.match(read('agent.1.log'), /kprobe\s+unavailable: .*kprobe: perf_event_open refused \(EACCES\): kernel\.perf_event_paranoid=3 /);
      assert.doesNotMatch(read('agent.1.log'), /kernel built without kprobes|tracefs\s+not mounted/);
      assert.match(read('agent.1.log'), /alloc\s+disabled can run: attaches/);

      // boot 1: one live kill, 3 while the agent was stopped (the kernel's own lines are the oracle)
      const boot1 = read('boot_id.1');
      const boot2 = read('boot_id.2');
      assert.notEqual(boot1, boot2, 'a real reboot: a new boot id');
      const kills1 = killLines(readKmsgDump(path.join(O, 'kmsg.1')), 'tail');
      assert.equal(kills1.length, 4, 'boot 1: 4 kills in the kernel log');
      const [live, ...missed] = kills1;
      const ev1 = readJsonl(path.join(O, 'events.1.jsonl')).filter(isKill);
      const live1 = ev1.filter((x) => x.victim_pid === live.line.pid);
      assert.equal(live1.length, 1, 'the live kill, recorded once');
      assert.notEqual(live1[0].hook, 'kmsg', 'captured live by the BPF hook');
      assert.equal(live1[0].boot_id, boot1);
      assertEqualsLine(live1[0], live, 'live kill');
      // the reclaim collector's mark_victim (pid argument before 6.8) and sched_process_exit saw the victim die
      assert.equal(typeof live1[0].victim_exit_latency_ms, 'number', `no exit latency: ${JSON.stringify(live1[0])}`);
      assert.equal(ev1.length, 1, 'while stopped, nothing recorded');

      // boot 2: active after boot; the 3 missed kills from the journal, each once, with boot 1's id and times
      assert.equal(read('active.boot2'), 'active', `the agent is not active after the reboot:\n${read('show.boot2')}`);
      assert.match(read('show.boot2'), /^NRestarts=0$/m, `the unit was restarted:\n${read('show.boot2')}`);
      assert.match(read('list-boots'), new RegExp(boot1.replace(/-/g, '')), 'the journal keeps boot 1 (persistent)');
      const ev2 = readJsonl(path.join(O, 'events.2.jsonl')).filter(isKill);
      const clock = read('clock.1').split(/\s+/).map(Number); // boot 1: wall clock (s) and uptime (s) at the dump
      for (const k of missed) {
        const recs = ev2.filter((x) => x.victim_pid === k.line.pid && x.boot_id === boot1);
        assert.equal(recs.length, 1, `missed kill ${k.line.pid}: ${recs.length} records of boot 1`);
        const rec = recs[0];
        assert.equal(rec.hook, 'kmsg');
        assert.equal(rec.event_id, kmsgEventId(boot1, k.usec, k.line.pid), 'event_id from boot 1, kernel time, pid');
        assertEqualsLine(rec, k, `missed kill ${k.line.pid}`);
        assert.equal(rec.kernel_release, read('uname'), "boot 1's kernel, from its own 'Linux version' line");
        const expected = (clock[0] - (clock[1] - k.usec / 1e6)) * 1000;
        assert.ok(Math.abs(Date.parse(rec.time) - expected) < 3000, `kill time ${rec.time}, boot 1's clock says ${new Date(expected).toISOString()}`);
        assert.match(read('agent.2.log'), new RegExp(`backfilled OOM kill of pid ${k.line.pid} \\(tail\\) from the systemd journal \\(previous boot ${boot1}\\)`));
      }
      assert.equal(ev2.filter((x) => x.boot_id === boot1 && x.victim_pid === live.line.pid).length, 1, 'the live kill is not recorded again from the journal');

      // the webhook sink (down since boot 1's config change) holds the 3 backfilled and 2 new kills; the upgrade; then
      // all 5 delivered once
      const kills2 = killLines(readKmsgDump(path.join(O, 'kmsg.2')), 'tail');
      assert.equal(kills2.length, 2, 'boot 2: 2 kills in the kernel log');
      const evFinal = readJsonl(path.join(O, 'events.final.jsonl')).filter(isKill);
      const ids = kills2.map((k) => {
        const recs = evFinal.filter((x) => x.boot_id === boot2 && x.victim_pid === k.line.pid);
        assert.equal(recs.length, 1, `boot 2 kill ${k.line.pid} in the file sink`);
        assertEqualsLine(recs[0], k, `boot 2 kill ${k.line.pid}`);
        return recs[0].event_id;
      });
      for (const k of missed) ids.push(kmsgEventId(boot1, k.usec, k.line.pid));
      assert.equal(new Set(ids).size, 5);
      const pending = readSpoolDir(path.join(O, 'spool.before-upgrade')).pending.map((p) => p.record).filter(isKill);
      assert.deepEqual(pending.map((x) => x.event_id).sort(), [...ids].sort(), 'before the upgrade: the 5 (3 of boot 1, 2 of boot 2) sit undelivered in the spool');
      assert.equal(read('upgrade.rc'), '0', read('upgrade.log'));
      assert.equal(read('version.upgrade'), upgradeVersion, 'upgraded to the higher version');
      assert.notEqual(read('pid.upgrade'), read('pid.before-upgrade'), 'the upgrade restarted the agent');
      assert.equal(read('active.upgrade'), 'active', read('show.upgrade'));
      assert.match(read('config.after-upgrade.yaml'), new RegExp(`url: http://127\\.0\\.0\\.1:${HOOK_PORT}/hook`), 'the edited conffile is kept');
      const received = readJsonl(path.join(O, 'received.jsonl')).filter(isKill);
      assert.deepEqual(received.map((x) => x.event_id).sort(), [...ids].sort(), 'after the upgrade and the sink back: the 5, each once');
      assert.equal(readSpoolDir(path.join(O, 'spool.after')).pending.length, 0, 'nothing left in the spool');
      assert.equal(evFinal.filter((x) => x.boot_id === boot1).length, 4, "boot 1's 4 kills are not recorded again by the restarts");

      // purge: nothing of the agent on disk
      assert.equal(read('purge.rc'), '0', read('purge.log'));
      assert.equal(read('leftovers'), '', `left on disk after purge:\n${read('leftovers')}`);
      assert.doesNotMatch(read('dpkg.after-purge'), /install ok|config-files/);
      assert.notEqual(read('active.purge'), 'active');
    });
  }
});
