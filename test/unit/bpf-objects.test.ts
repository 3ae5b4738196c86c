/*
 * One CO-RE object per architecture (scripts/build-bpf.sh): the loader must take the host's, and each object must
 * read kprobe arguments from its own architecture's registers (struct pt_regs is not relocated by CO-RE).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { BPF_DIR, bpfArchSupported, bpfObjectPath, type BpfObjectName } from '../../src/bpf/objects';
import { OBJECT_PATH, explain } from '../../src/collectors/oomkill/hooks';
import { BpfError } from '../../src/bpf/errors';
import { RECLAIM_OBJECT_PATH } from '../../src/collectors/reclaim/collector';
import { ALLOC_OBJECT_PATH } from '../../src/collectors/alloc/collector';

const REPO = path.resolve(__dirname, '../../..');
const NAMES: BpfObjectName[] = ['oomkill', 'reclaim', 'alloc'];

test('the loader picks bpf/x86/ on x64 and bpf/arm64/ on arm64, the same way in the dev tree and in the package', () => {
  assert.equal(bpfObjectPath('oomkill', 'x64', '/usr/lib/oomtrail/bpf'), '/usr/lib/oomtrail/bpf/x86/oomkill.bpf.o');
  assert.equal(bpfObjectPath('reclaim', 'arm64', '/usr/lib/oomtrail/bpf'), '/usr/lib/oomtrail/bpf/arm64/reclaim.bpf.o');
  // dist/src/bpf/objects.js -> <root>/bpf: the repository here, /usr/lib/oomtrail in the package (its dist/ beside bpf/)
  assert.equal(BPF_DIR, path.join(REPO, 'bpf'));
  assert.equal(path.relative(path.resolve(__dirname, '../../src/bpf'), BPF_DIR), path.join('..', '..', '..', 'bpf'));
  // an architecture without objects is not given another one's (its kprobe would read the wrong registers)
  assert.equal(bpfArchSupported('ppc64'), false);
  assert.equal(bpfObjectPath('oomkill', 'ppc64', '/b'), '/b/ppc64/oomkill.bpf.o');
  assert.ok(bpfArchSupported('x64') && bpfArchSupported('arm64'));
  // the collectors' defaults are this host's
  assert.equal(OBJECT_PATH, bpfObjectPath('oomkill', process.arch));
  assert.equal(RECLAIM_OBJECT_PATH, bpfObjectPath('reclaim', process.arch));
  assert.equal(ALLOC_OBJECT_PATH, bpfObjectPath('alloc', process.arch));
});

test('every object is committed for both architectures, and nothing is left at the old single-arch path', () => {
  for (const arch of ['x64', 'arm64']) for (const name of NAMES) assert.ok(fs.statSync(bpfObjectPath(name, arch)).size > 10_000, `${name} for ${arch}`);
  assert.deepEqual(fs.readdirSync(path.join(REPO, 'bpf')).filter((f) => f.endsWith('.bpf.o')), []);
});

/** The raw bytes of one ELF64 section, by name. */
function section(file: string, want: string): Buffer {
  const b = fs.readFileSync(file);
  assert.equal(b.readUInt32BE(0), 0x7f454c46, 'ELF');
  assert.equal(b.readUInt16LE(0x12), 247, 'EM_BPF');
  const shoff = Number(b.readBigUInt64LE(0x28)), shentsize = b.readUInt16LE(0x3a), shnum = b.readUInt16LE(0x3c), shstrndx = b.readUInt16LE(0x3e);
  const sh = (i: number) => shoff + i * shentsize;
  const strOff = Number(b.readBigUInt64LE(sh(shstrndx) + 0x18));
  for (let i = 0; i < shnum; i++) {
    const nameOff = b.readUInt32LE(sh(i));
    const name = b.toString('latin1', strOff + nameOff, b.indexOf(0, strOff + nameOff));
    if (name === want) return b.subarray(Number(b.readBigUInt64LE(sh(i) + 0x18)), Number(b.readBigUInt64LE(sh(i) + 0x18) + b.readBigUInt64LE(sh(i) + 0x20)));
  }
  throw new Error(`no section ${want} in ${file}`);
}

test("each object's kprobe reads oom_kill_process's first argument from its own architecture's register", () => {
  // PT_REGS_PARM1: x86-64 %rdi = struct pt_regs.di at byte 112 (r15 … si, di: the 15th u64);
  // arm64 x0 = struct user_pt_regs.regs[0] at byte 0
  const want: Record<string, number> = { x64: 112, arm64: 0 };
  for (const [arch, off] of Object.entries(want)) {
    const insn = section(bpfObjectPath('oomkill', arch), 'kprobe/oom_kill_process').subarray(0, 8);
    // first instruction: rX = *(u64 *)(r1 + off), r1 being the program's ctx (struct pt_regs *)
    assert.equal(insn[0], 0x79, `${arch}: BPF_LDX|BPF_MEM|BPF_DW`);
    assert.equal(insn[1] >> 4, 1, `${arch}: loads from r1 (ctx)`);
    assert.equal(insn.readInt16LE(2), off, `${arch}: PT_REGS_PARM1 offset`);
  }
});

test('fentry refused for want of a trampoline (arm64 6.1: ENOTSUPP, 524) is named and explained, so the fallback to kprobe says why', () => {
  const err = new BpfError('bpf_program__attach', 524, 'fentry_oom_kill_process');
  assert.equal(err.code, 'ENOTSUPP');
  assert.match(explain('fentry', err, []), /ENOTSUPP.*no BPF trampoline/);
  assert.doesNotMatch(explain('kprobe', new BpfError('bpf_program__attach', 524), []), /trampoline/);
});
