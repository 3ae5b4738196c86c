/*
 * Maps of the committed CO-RE object that fill up would lose data silently: every per-thread or
 * per-process map the OOM path writes must be LRU (evicts the oldest, never refuses an update).
 * Read from the object's BTF map definitions (what libbpf creates), with bpftool.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { bpfObjectPath } from '../../src/bpf/objects';

const BPF_MAP_TYPE_LRU_HASH = 9;

interface BtfType {
  id: number;
  kind: string;
  name?: string;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number }>;
}

/** `__uint(field, N)` in a map definition is a pointer to an array of N elements. */
function mapDef(types: BtfType[], map: string): Record<string, number> {
  const byId = new Map(types.map((t) => [t.id, t]));
  const v = types.find((t) => t.kind === 'VAR' && t.name === map);
  assert.ok(v, `map ${map} in the object`);
  const def = byId.get(v.type_id!)!;
  const out: Record<string, number> = {};
  for (const m of def.members ?? []) {
    const ptr = byId.get(m.type_id);
    const arr = ptr?.kind === 'PTR' ? byId.get(ptr.type_id!) : undefined;
    if (arr?.kind === 'ARRAY') out[m.name] = arr.nr_elems!;
  }
  return out;
}

for (const arch of ['x64', 'arm64']) test(`maps the OOM path writes per thread or process are LRU: none refuses an update once full (${arch})`, (t) => {
  const OBJECT = bpfObjectPath('oomkill', arch);
  let json: string;
  try {
    json = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', OBJECT], { encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return t.skip('bpftool not installed');
    throw err;
  }
  const types = (JSON.parse(json) as { types: BtfType[] }).types;
  // oom_ctx_by_tid was a plain 1,024-entry hash nothing deleted from: after 1,024 distinct
  // OOM-triggering threads fentry/kprobe lost oom_control silently
  for (const map of ['oom_ctx_by_tid', 'kill_target_by_tid', 'marked_victims', 'memcg_oom_seen']) {
    const def = mapDef(types, map);
    assert.equal(def.type, BPF_MAP_TYPE_LRU_HASH, `${map} is BPF_MAP_TYPE_LRU_HASH`);
    assert.ok(def.max_entries >= 4096, `${map} holds ${def.max_entries}`);
  }
  // a failed save is counted, never silent
  assert.ok(types.some((x) => x.kind === 'VAR' && x.name === 'oom_ctx_unsaved'));
});
