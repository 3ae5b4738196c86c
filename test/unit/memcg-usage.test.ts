import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { BpfObject } from '../../src/bpf/object';
import { MemcgUsagePass } from '../../src/collectors/reclaim/usage';

/**
 * A stand-in for the loaded reclaim object (the real one needs the kernel: trail.e2e compares the real
 * pass with the usage files): `alive` plays the kernel's cgroups, runIter its iterator filling in the
 * slots of those alive, as bpf/reclaim.bpf.c does.
 */
function fakeObject(alive: Map<bigint, number>) {
  const memory = new ArrayBuffer(16384 * 16);
  const words = new Uint32Array(memory);
  const slots = new Map<bigint, number>();
  const obj = {
    mapMemory: () => memory,
    attachIter: () => 7,
    update: (_m: string, key: Buffer, value: Buffer) => slots.set(key.readBigUInt64LE(0), value.readUInt32LE(0)),
    deleteKey: (_m: string, key: Buffer) => slots.delete(key.readBigUInt64LE(0)),
    runIter: () => {
      for (const [id, pages] of alive) {
        const s = slots.get(id);
        if (s === undefined) continue;
        words[s * 4] = pages % 2 ** 32;
        words[s * 4 + 1] = Math.floor(pages / 2 ** 32);
        words[s * 4 + 2]++;
      }
    },
  };
  return { obj: obj as unknown as BpfObject, slots };
}

test('usage pass: bytes = pages × page size for the cgroups the pass visited; a removed one has none; slots are reused', () => {
  const alive = new Map<bigint, number>([
    [11n, 100],
    [12n, 5],
  ]);
  const { obj, slots } = fakeObject(alive);
  const pass = MemcgUsagePass.attach(obj, fs.mkdtempSync('/tmp/oomtrail-usage-'), 4096);
  assert.ok(pass.track(11n) && pass.track(12n));
  assert.equal(pass.usage(11), undefined, 'nothing before the first pass');
  pass.refresh();
  assert.equal(pass.usage(11), 100 * 4096);
  assert.equal(pass.usage(12), 5 * 4096);
  alive.delete(12n); // rmdir: the iterator no longer visits it
  alive.set(11n, 2 ** 33); // > 2^32 pages: both words read
  pass.refresh();
  assert.equal(pass.usage(11), 2 ** 33 * 4096);
  assert.equal(pass.usage(12), undefined, 'not visited by this pass: the caller reads the file');
  pass.untrack(12n);
  assert.equal(slots.has(12n), false);
  const freed = [...slots.values()];
  pass.track(13n);
  alive.set(13n, 1);
  assert.notDeepEqual(slots.get(13n), undefined);
  assert.ok(!freed.includes(slots.get(13n)!), 'a new cgroup takes the freed slot, not one in use');
  assert.equal(pass.usage(13), undefined, 'a reused slot holds nothing of the removed cgroup before its pass');
  pass.refresh();
  assert.equal(pass.usage(13), 4096);
  pass.close();
  assert.throws(() => pass.refresh(), /stopped/);
  assert.equal(pass.usage(11), undefined);
});

test('usage pass: a cgroup the map refuses is not taken (its file is read) and its slot is not lost', () => {
  const { obj, slots } = fakeObject(new Map([[21n, 3]]));
  const refusing = Object.assign(Object.create(obj) as object, {
    update: () => {
      throw new Error('bpf_map_update_elem failed: ENOMEM');
    },
  }) as unknown as BpfObject;
  const pass = MemcgUsagePass.attach(refusing, fs.mkdtempSync('/tmp/oomtrail-usage-'), 4096);
  assert.equal(pass.track(21n), false);
  assert.equal(slots.size, 0);
  pass.refresh();
  assert.equal(pass.usage(21), undefined);
});
