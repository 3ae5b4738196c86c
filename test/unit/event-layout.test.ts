/*
 * The decoder's layout table must match the C struct: both as the header compiles with the host
 * compiler, and as the committed CO-RE object carries it in its BTF (the bytes the kernel sends).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeEvent, EVENT_FIELDS, EVENT_LAYOUT, EVENT_SIZE, CGROUP_PATH_SIZE, CG_DEPTH, CG_NAME_LEN, FLAG, HOOK_IDS } from '../../src/collectors/oomkill/event';

const REPO = path.resolve(__dirname, '../../..');
const HEADER = path.join(REPO, 'bpf/oomkill.h');
const OBJECT = path.join(REPO, 'bpf/oomkill.bpf.o');

function findCc(): string | null {
  for (const cc of ['cc', 'gcc', 'clang']) {
    try {
      execFileSync(cc, ['--version'], { stdio: 'ignore' });
      return cc;
    } catch {
      /* next */
    }
  }
  return null;
}

test('decoder layout == bpf/oomkill.h compiled by the host C compiler', (t) => {
  const cc = findCc();
  if (!cc) return t.skip('no C compiler on this host');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-layout-'));
  const prints = EVENT_FIELDS.map(([name]) => `printf("${name} %zu\\n", offsetof(struct oomtrail_event, ${name}));`).join('\n');
  fs.writeFileSync(
    path.join(dir, 'layout.c'),
    `#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include "${HEADER}"\nint main(void){\n${prints}\n` +
      `printf("__size %zu\\n", sizeof(struct oomtrail_event));\nprintf("__cgsize %zu\\n", sizeof(struct oomtrail_cgroup_path));\nreturn 0;}\n`,
  );
  execFileSync(cc, ['-o', path.join(dir, 'layout'), path.join(dir, 'layout.c')]);
  const out = execFileSync(path.join(dir, 'layout'), { encoding: 'utf8' });
  const c = Object.fromEntries(out.trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
  for (const [name] of EVENT_FIELDS) assert.equal(EVENT_LAYOUT.offsets[name], c[name], `offset of ${name}`);
  assert.equal(EVENT_SIZE, c.__size, 'sizeof(struct oomtrail_event)');
  assert.equal(CGROUP_PATH_SIZE, c.__cgsize, 'sizeof(struct oomtrail_cgroup_path)');
  // every member of the C struct is decoded: a field added to the header alone shows here
  const members = fs.readFileSync(HEADER, 'utf8').match(/struct oomtrail_event \{([^}]*)\}/)![1];
  const names = [...members.matchAll(/^\s*(?:__u64|__u32|__s32|char|struct oomtrail_cgroup_path)\s+(\w+)/gm)].map((m) => m[1]);
  assert.deepEqual(names, EVENT_FIELDS.map(([n]) => n));
});

test('decoder layout == the BTF of the committed CO-RE object', (t) => {
  let json: string;
  try {
    json = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', OBJECT], { encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch {
    return t.skip('bpftool not installed');
  }
  const types = (JSON.parse(json) as { types: Array<{ name?: string; size?: number; members?: Array<{ name: string; bits_offset: number }> }> }).types;
  const ev = types.find((x) => x.name === 'oomtrail_event');
  assert.ok(ev?.members, 'struct oomtrail_event is in the object BTF');
  assert.equal(ev.size, EVENT_SIZE);
  assert.deepEqual(
    ev.members.map((m) => [m.name, m.bits_offset / 8]),
    EVENT_FIELDS.map(([name]) => [name, EVENT_LAYOUT.offsets[name]]),
  );
});

test('decodeEvent reads a hand-built event', () => {
  const buf = Buffer.alloc(EVENT_SIZE);
  const o = EVENT_LAYOUT.offsets;
  buf.writeBigUInt64LE(123456789n, o.boot_ns);
  buf.writeBigUInt64LE(100n, o.anon_rss_pages);
  buf.writeBigUInt64LE(0x140ccan, o.gfp_mask);
  buf.writeBigUInt64LE(16384n, o.domain_pages);
  buf.writeUInt32LE(4242, o.victim_pid);
  buf.writeUInt32LE(4243, o.victim_tid);
  buf.writeInt32LE(-999, o.oom_score_adj);
  buf.writeInt32LE(0, o.order);
  buf.writeUInt32LE(HOOK_IDS.kprobe, o.hook);
  buf.writeUInt32LE(4, o.constraint);
  buf.writeUInt32LE(FLAG.HAS_TASK | FLAG.HAS_OOM_CONTROL | FLAG.VICTIM_CG_VALID | FLAG.OOM_CG_VALID, o.flags);
  buf.write('stress-ng\0', o.victim_comm);
  const cg = o.victim_cg;
  buf.writeBigUInt64LE(77n, cg);
  buf.writeUInt32LE(2, cg + 8);
  buf.write('leaf ü\0', cg + 16); // names are leaf first
  buf.write('parent\0', cg + 16 + CG_NAME_LEN);
  // oom_cg depth 0: the root
  const ev = decodeEvent(buf);
  assert.equal(ev.bootNs, 123456789n);
  assert.equal(ev.victimPid, 4242);
  assert.equal(ev.victimTid, 4243);
  assert.equal(ev.oomScoreAdj, -999);
  assert.equal(ev.hook, 'kprobe');
  assert.equal(ev.constraint, 'memcg');
  assert.equal(ev.gfpMask, 0x140cca);
  assert.equal(ev.order, 0);
  assert.equal(ev.victimComm, 'stress-ng');
  assert.deepEqual(ev.victimCgroup, { id: 77n, path: '/parent/leaf ü', truncated: false });
  assert.equal(ev.oomCgroup?.path, '/');
  assert.equal(ev.memcgLimitPages, null, 'no HAS_MEMCG flag');
  assert.equal(ev.victimNsPid, null, 'ns pid 0: not read');
  assert.equal(ev.oomGroupKill, false);
});

test('decodeEvent: the victim\'s namespace pid and the group-kill mark (appended fields)', () => {
  const buf = Buffer.alloc(EVENT_SIZE);
  const o = EVENT_LAYOUT.offsets;
  buf.writeUInt32LE(FLAG.HAS_TASK, o.flags);
  buf.writeUInt32LE(1, o.victim_ns_pid);
  buf.writeUInt32LE(2, o.victim_ns_level);
  buf.writeUInt32LE(1, o.oom_group_kill);
  const ev = decodeEvent(buf);
  assert.equal(ev.victimNsPid, 1);
  assert.equal(ev.victimNsLevel, 2);
  assert.equal(ev.oomGroupKill, true);
  // without a task (pre-6.8 tracepoint fallback) neither is known
  buf.writeUInt32LE(FLAG.HAS_TP_FIELDS, o.flags);
  const tp = decodeEvent(buf);
  assert.equal(tp.victimNsPid, null);
  assert.equal(tp.oomGroupKill, null);
});

test('decodeEvent keeps 255-byte names and 16 levels whole, and marks a deeper path as cut', () => {
  const buf = Buffer.alloc(EVENT_SIZE);
  const o = EVENT_LAYOUT.offsets;
  buf.writeUInt32LE(FLAG.HAS_TASK | FLAG.VICTIM_CG_VALID | FLAG.OOM_CG_VALID, o.flags);
  const long = 'n'.repeat(254) + 'z'; // 255 bytes, NAME_MAX
  assert.equal(CG_DEPTH, 16);
  const names = Array.from({ length: CG_DEPTH }, (_, i) => (i === 0 ? long : `l${CG_DEPTH - i}`)); // leaf first
  for (const [cg, truncated] of [[o.victim_cg, 0], [o.oom_cg, 1]] as const) {
    buf.writeBigUInt64LE(9n, cg);
    buf.writeUInt32LE(CG_DEPTH, cg + 8);
    buf.writeUInt32LE(truncated, cg + 12);
    names.forEach((n, i) => buf.write(n + '\0', cg + 16 + i * CG_NAME_LEN));
  }
  const ev = decodeEvent(buf);
  const whole = '/' + [...names].reverse().join('/');
  assert.equal(ev.victimCgroup?.path, whole);
  assert.equal(ev.victimCgroup?.path.split('/').pop()!.length, 255);
  assert.equal(ev.victimCgroup?.truncated, false);
  assert.equal(ev.oomCgroup?.path, '/…' + whole);
  assert.equal(ev.oomCgroup?.truncated, true);
});

test('decodeEvent refuses a buffer of another size', () => {
  assert.throws(() => decodeEvent(Buffer.alloc(EVENT_SIZE - 1)), /drifted/);
  assert.throws(() => decodeEvent(Buffer.alloc(EVENT_SIZE + 8)), /drifted/);
});
