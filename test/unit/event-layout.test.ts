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
import { bpfObjectPath } from '../../src/bpf/objects';
import { CgroupPathMemo, decodeEvent, EVENT_FIELDS, EVENT_HEADER_SIZE, EVENT_LAYOUT, EVENT_SIZE, CGROUP_PATH_SIZE, CG_DEPTH, CG_NAME_LEN, FLAG, HOOK_IDS, type CgroupPath } from '../../src/collectors/oomkill/event';

const REPO = path.resolve(__dirname, '../../..');
const HEADER = path.join(REPO, 'bpf/oomkill.h');

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
      `printf("__size %zu\\n", sizeof(struct oomtrail_event));\nprintf("__hdr %zu\\n", (size_t)OOMTRAIL_EVENT_HEADER_SIZE);\nprintf("__cgsize %zu\\n", sizeof(struct oomtrail_cgroup_path));\nreturn 0;}\n`,
  );
  execFileSync(cc, ['-o', path.join(dir, 'layout'), path.join(dir, 'layout.c')]);
  const out = execFileSync(path.join(dir, 'layout'), { encoding: 'utf8' });
  const c = Object.fromEntries(out.trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
  for (const [name] of EVENT_FIELDS) assert.equal(EVENT_LAYOUT.offsets[name], c[name], `offset of ${name}`);
  assert.equal(EVENT_SIZE, c.__size, 'sizeof(struct oomtrail_event)');
  assert.equal(EVENT_HEADER_SIZE, c.__hdr, 'OOMTRAIL_EVENT_HEADER_SIZE');
  assert.equal(CGROUP_PATH_SIZE, c.__cgsize, 'sizeof(struct oomtrail_cgroup_path)');
  // every member of the C struct is decoded: a field added to the header alone shows here
  const members = fs.readFileSync(HEADER, 'utf8').match(/struct oomtrail_event \{([^}]*)\}/)![1];
  const names = [...members.matchAll(/^\s*(?:__u64|__u32|__s32|char|struct oomtrail_cgroup_path)\s+(\w+)/gm)].map((m) => m[1]);
  assert.deepEqual(names, EVENT_FIELDS.map(([n]) => n));
});

// one object per architecture (bpf/x86, bpf/arm64): the kernel of either sends the bytes its object's struct says
for (const arch of ['x64', 'arm64']) test(`decoder layout == the BTF of the committed CO-RE object (${arch})`, (t) => {
  const OBJECT = bpfObjectPath('oomkill', arch);
  let json: string;
  try {
    json = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', OBJECT], { encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return t.skip('bpftool not installed');
    throw err;
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

test('the two paths come last: a header-only event is 336 bytes, a full one 8,560', () => {
  assert.equal(EVENT_HEADER_SIZE, 336);
  assert.equal(EVENT_SIZE, EVENT_HEADER_SIZE + 2 * CGROUP_PATH_SIZE);
  assert.equal(EVENT_SIZE, 8560);
  const names = EVENT_FIELDS.map(([n]) => n);
  assert.deepEqual(names.slice(-2), ['victim_cg', 'oom_cg']);
});

/** A full event of one cgroup pair, or its header-only form (flag CG_AS_BEFORE, no path bytes). */
function sweepEvent(opts: { pid: number; victim: [bigint, string[]]; oom: [bigint, string[]] | null; asBefore: boolean }): Buffer {
  const o = EVENT_LAYOUT.offsets;
  const buf = Buffer.alloc(opts.asBefore ? EVENT_HEADER_SIZE : EVENT_SIZE);
  buf.writeUInt32LE(opts.pid, o.victim_pid);
  buf.writeUInt32LE(4, o.constraint);
  buf.writeUInt32LE(FLAG.HAS_TASK | FLAG.HAS_OOM_CONTROL | FLAG.VICTIM_CG_VALID | FLAG.OOM_CG_VALID | (opts.asBefore ? FLAG.CG_AS_BEFORE : 0), o.flags);
  buf.writeBigUInt64LE(opts.victim[0], o.victim_cg_id);
  buf.writeBigUInt64LE(opts.oom?.[0] ?? 0n, o.oom_cg_id);
  if (!opts.asBefore) {
    for (const [off, cg] of [[o.victim_cg, opts.victim], [o.oom_cg, opts.oom]] as const) {
      if (!cg) continue;
      buf.writeBigUInt64LE(cg[0], off);
      buf.writeUInt32LE(cg[1].length, off + 8);
      [...cg[1]].reverse().forEach((n, i) => buf.write(n + '\0', off + 16 + i * CG_NAME_LEN)); // leaf first
    }
  }
  return buf;
}

test('decodeEvent: a header-only event names its cgroups by id and carries no path of its own', () => {
  const ev = decodeEvent(sweepEvent({ pid: 7, victim: [41n, ['pod', 'ctr']], oom: [40n, ['pod']], asBefore: true }));
  assert.equal(ev.victimPid, 7);
  assert.deepEqual(ev.cgAsBefore, { victimId: 41n, oomId: 40n });
  assert.equal(ev.victimCgroup, null);
  assert.equal(ev.oomCgroup, null);
  // a global OOM's domain is the root: id 0, nothing to reuse
  const global = decodeEvent(sweepEvent({ pid: 8, victim: [41n, ['pod', 'ctr']], oom: null, asBefore: true }));
  assert.deepEqual(global.oomCgroup, { id: 0n, path: '/', truncated: false });
  const full = decodeEvent(sweepEvent({ pid: 9, victim: [41n, ['pod', 'ctr']], oom: [40n, ['pod']], asBefore: false }));
  assert.equal(full.cgAsBefore, undefined);
  assert.deepEqual(full.victimCgroup, { id: 41n, path: '/pod/ctr', truncated: false });
  // the flag and the size must agree: either alone is a drifted object
  const flagged = sweepEvent({ pid: 9, victim: [41n, ['pod']], oom: null, asBefore: false });
  flagged.writeUInt32LE(flagged.readUInt32LE(EVENT_LAYOUT.offsets.flags) | FLAG.CG_AS_BEFORE, EVENT_LAYOUT.offsets.flags);
  assert.throws(() => decodeEvent(flagged), /drifted/);
  const short = sweepEvent({ pid: 9, victim: [41n, ['pod']], oom: null, asBefore: true });
  short.writeUInt32LE(FLAG.HAS_TASK, EVENT_LAYOUT.offsets.flags);
  assert.throws(() => decodeEvent(short), /drifted/);
});

test('CgroupPathMemo: a sweep member takes the paths of the last full event when its ids match, without a lookup', () => {
  const lookups: bigint[] = [];
  const memo = new CgroupPathMemo((id) => (lookups.push(id), null));
  const first = decodeEvent(sweepEvent({ pid: 100, victim: [41n, ['pod', 'ctr']], oom: [40n, ['pod']], asBefore: false }));
  assert.equal(memo.settle(first), 'full');
  const members = [101, 102, 103].map((pid) => decodeEvent(sweepEvent({ pid, victim: [41n, []], oom: [40n, []], asBefore: true })));
  for (const m of members) assert.equal(memo.settle(m), 'as-before');
  for (const m of members) {
    assert.deepEqual(m.victimCgroup, { id: 41n, path: '/pod/ctr', truncated: false });
    assert.deepEqual(m.oomCgroup, { id: 40n, path: '/pod', truncated: false });
  }
  assert.notEqual(members[0].victimCgroup, first.victimCgroup, 'a copy: one record cannot change another');
  assert.deepEqual(lookups, []);
  assert.equal(memo.resolvedById + memo.unresolved, 0);
});

test('CgroupPathMemo: ids that do not match the last full event are looked up by id, never taken from another cgroup', () => {
  const cgroupfs = new Map<bigint, CgroupPath>([[51n, { id: 51n, path: '/b/ctr', truncated: false }]]);
  const lookups: bigint[] = [];
  const memo = new CgroupPathMemo((id) => (lookups.push(id), cgroupfs.get(id) ?? null));
  memo.settle(decodeEvent(sweepEvent({ pid: 1, victim: [41n, ['a', 'ctr']], oom: [40n, ['a']], asBefore: false })));
  // the full event of cgroup pair (51, 50) was lost: its members must not get /a's paths
  const lost = [2, 3].map((pid) => decodeEvent(sweepEvent({ pid, victim: [51n, []], oom: [50n, []], asBefore: true })));
  assert.equal(memo.settle(lost[0]), 'looked-up');
  assert.equal(memo.settle(lost[1]), 'as-before', 'the answer is kept for the rest of the sweep');
  for (const m of lost) {
    assert.deepEqual(m.victimCgroup, { id: 51n, path: '/b/ctr', truncated: false }, 'found by its id');
    assert.equal(m.oomCgroup, null, 'id 50 is nowhere: no path rather than a guess');
  }
  assert.deepEqual(lookups, [51n, 50n], 'one lookup per id, not one per member');
  assert.equal(memo.unresolved, 2);
  // no full event at all yet (an agent that started mid-sweep): same rule
  const fresh = new CgroupPathMemo(() => null);
  const orphan = decodeEvent(sweepEvent({ pid: 4, victim: [41n, []], oom: [40n, []], asBefore: true }));
  assert.equal(fresh.settle(orphan), 'looked-up');
  assert.equal(orphan.victimCgroup, null);
  assert.equal(orphan.oomCgroup, null);
});

test('CgroupPathMemo: a full event in between replaces the remembered pair', () => {
  const memo = new CgroupPathMemo(() => null);
  memo.settle(decodeEvent(sweepEvent({ pid: 1, victim: [41n, ['a', 'x']], oom: [40n, ['a']], asBefore: false })));
  memo.settle(decodeEvent(sweepEvent({ pid: 2, victim: [61n, ['c']], oom: [61n, ['c']], asBefore: false })));
  const m = decodeEvent(sweepEvent({ pid: 3, victim: [61n, []], oom: [61n, []], asBefore: true }));
  assert.equal(memo.settle(m), 'as-before');
  assert.equal(m.victimCgroup?.path, '/c');
  // a member of the earlier pair after that is not the last full event's: looked up (here: not found)
  const late = decodeEvent(sweepEvent({ pid: 4, victim: [41n, []], oom: [40n, []], asBefore: true }));
  assert.equal(memo.settle(late), 'looked-up');
  assert.equal(late.victimCgroup, null);
});
