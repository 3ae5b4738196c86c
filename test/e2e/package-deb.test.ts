/*
 * `npm run package` (scripts/package-deb.sh): the .deb built from this tree (test/helpers/deb.ts: once per content of
 * its inputs), checked from the outside with dpkg-deb: what it depends on, installs, declares and leaves out; then
 * its own node and its private libbpf run from the unpacked tree (`oomtrail check --json` as the unit's ExecStartPre
 * runs it: root). Installing it is the VM test's (a systemd-booted Debian guest); this host's dpkg is not touched.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO } from '../helpers/agent';
import { builtDeb } from '../helpers/deb';

const PINNED = fs.readFileSync(path.join(REPO, 'runtime/node.version'), 'utf8').trim();
const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
/**
 * Names every supported release has: glibc, libelf, zlib (libbpf's own needs), node's C++ runtime and libatomic.
 * Checked when written in Debian 11's and 13's Packages lists (the VM cache) and on Debian 12: each exists by name
 * (13: libelf1 as the versioned Provides of libelf1t64, as on Ubuntu 24.04); Ubuntu's archive is not reachable here.
 * libbpf1 is not among them: Debian 11 (and Ubuntu 22.04) have only libbpf0, hence the private copy.
 */
const ALLOWED = new Set(['libc6', 'libelf1', 'zlib1g', 'libstdc++6', 'libgcc-s1', 'libatomic1']);
/** The oldest glibc of those releases: Debian 11's 2.31. */
const OLDEST_GLIBC = '2.31';

const vcmp = (a: string, b: string) => {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
};

describe('npm run package: the .deb', () => {
  let deb: string;
  let files: string[];
  let tmp: string;
  let root: string;

  before(async () => {
    const b = await builtDeb();
    deb = b.deb;
    console.log(`# ${path.basename(deb)}: ${(fs.statSync(deb).size / 1e6).toFixed(1)} MB (test build, xz -0), ${b.built ? `built in ${(b.ms / 1000).toFixed(0)} s` : 'cached build'}`);
    files = execFileSync('dpkg-deb', ['-c', deb], { encoding: 'utf8', maxBuffer: 64 << 20 })
      .split('\n')
      .filter(Boolean)
      .map((l) => l.replace(/^.* \.\//, '/').replace(/ -> .*$/, ''));
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-deb-'));
    root = path.join(tmp, 'root');
    execFileSync('dpkg-deb', ['-R', deb, root]);
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const field = (name: string) => execFileSync('dpkg-deb', ['-f', deb, name], { encoding: 'utf8' }).trim();

  test('control: name, version, arch, and Depends only on names every supported release has', () => {
    assert.equal(path.basename(deb), `oomtrail_${VERSION}_amd64.deb`);
    assert.equal(field('Package'), 'oomtrail');
    assert.equal(field('Version'), VERSION);
    assert.equal(field('Architecture'), 'amd64');
    const deps = field('Depends').split(',').map((d) => d.trim());
    const names = deps.map((d) => d.split(/[ (]/)[0]);
    assert.deepEqual(names.filter((n) => !ALLOWED.has(n)), [], `Depends: ${field('Depends')}`);
    assert.ok(!names.includes('libbpf1') && !names.includes('nodejs'));
    for (const n of ['libc6', 'libelf1', 'zlib1g']) assert.ok(names.includes(n), `Depends names ${n}: ${field('Depends')}`);
    // the libc floor is what the packed ELF files ask for, and the oldest supported release has it
    const libc = /^libc6 \(>= ([\d.]+)\)$/.exec(deps.find((d) => d.startsWith('libc6'))!)?.[1];
    assert.ok(libc, field('Depends'));
    const elves = files.filter((f) => /\/(bin\/node|[^/]+\.so[.\d]*|[^/]+\.node)$/.test(f)).map((f) => path.join(root, f));
    const needed = execFileSync('objdump', ['-T', ...elves], { encoding: 'utf8', maxBuffer: 64 << 20 })
      .match(/GLIBC_[\d.]+/g)!
      .map((s) => s.slice(6))
      .sort(vcmp)
      .pop()!;
    assert.equal(libc, needed, 'libc6 (>= the highest GLIBC_ symbol version of the packed binaries)');
    assert.ok(vcmp(libc, OLDEST_GLIBC) <= 0, `glibc ${libc} > Debian 11's ${OLDEST_GLIBC}`);
  });

  test('contents: runtime, agent, production deps, BPF objects, private libbpf, CLI, unit, conffile; no maps, tests or sources', () => {
    for (const f of [
      '/usr/lib/oomtrail/bin/node',
      '/usr/lib/oomtrail/dist/src/cli/main.js',
      '/usr/lib/oomtrail/package.json',
      '/usr/lib/oomtrail/node_modules/koffi/package.json',
      '/usr/lib/oomtrail/bpf/x86/oomkill.bpf.o',
      '/usr/lib/oomtrail/bpf/x86/reclaim.bpf.o',
      '/usr/lib/oomtrail/bpf/x86/alloc.bpf.o',
      '/usr/lib/oomtrail/lib/libbpf.so.1',
      '/usr/bin/oomtrail',
      '/lib/systemd/system/oomtrail.service',
      '/etc/oomtrail/config.yaml',
      '/usr/share/doc/oomtrail/copyright',
    ]) {
      assert.ok(files.includes(f), `${f} in the package`);
    }
    const bad = files.filter(
      (f) =>
        /\.map$|\.tsbuildinfo$/.test(f) ||
        /\.ts$/.test(f) ||
        /\/dist\/(test|bench|scripts)\//.test(f) ||
        /\/node_modules\/(typescript|testcontainers|@types|@grafana)\//.test(f) ||
        /\/musl_x64\//.test(f),
    );
    assert.deepEqual(bad.slice(0, 20), [], 'no source maps, TypeScript, tests, dev dependencies or musl builds');
    const addons = files.filter((f) => f.endsWith('.node'));
    assert.ok(addons.length >= 2, addons.join(' '));
    assert.deepEqual(addons.filter((f) => !/linux[-_]x64/.test(f)), [], 'native addons for linux x64 only');
    // the package's own architecture's BPF objects only (bpf/<arch>/, the kernel's name)
    assert.deepEqual(files.filter((f) => f.endsWith('.bpf.o') && !f.startsWith('/usr/lib/oomtrail/bpf/x86/')), [], 'BPF objects of x86 only');
    assert.deepEqual(fs.readFileSync(path.join(root, 'DEBIAN/conffiles'), 'utf8').trim().split('\n'), ['/etc/oomtrail/config.yaml']);
    assert.equal(fs.readFileSync(path.join(root, 'etc/oomtrail/config.yaml'), 'utf8'), fs.readFileSync(path.join(REPO, 'config/default.yaml'), 'utf8'));
    for (const s of ['postinst', 'prerm', 'postrm']) {
      const st = fs.statSync(path.join(root, 'DEBIAN', s));
      assert.ok(st.mode & 0o100, `${s} executable`);
    }
    // purge removes the state (DynamicUser= keeps it in /var/lib/private) and the configuration
    assert.match(fs.readFileSync(path.join(root, 'DEBIAN/postrm'), 'utf8'), /purge[\s\S]*rm -rf \/var\/lib\/oomtrail \/var\/lib\/private\/oomtrail \/etc\/oomtrail/);
    const copyright = fs.readFileSync(path.join(root, 'usr/share/doc/oomtrail/copyright'), 'utf8');
    assert.match(copyright, /libbpf/);
    assert.match(copyright, /LGPL-2\.1|BSD-2-Clause/, "libbpf's license");
    // the unit runs the package's own node on the package's agent
    const unit = fs.readFileSync(path.join(root, 'lib/systemd/system/oomtrail.service'), 'utf8');
    for (const m of unit.matchAll(/^ExecStart(?:Pre)?=(\S+) .*?(\S+main\.js)/gm)) {
      assert.ok(files.includes(m[1]) && files.includes(m[2]), `${m[0]}: both paths in the package`);
    }
    assert.match(fs.readFileSync(path.join(root, 'usr/bin/oomtrail'), 'utf8'), /exec \/usr\/lib\/oomtrail\/bin\/node /);
  });

  test('every production dependency loads from the pruned node_modules on the packed node (native addons too)', () => {
    const lib = path.join(root, 'usr/lib/oomtrail');
    const deps = Object.keys((JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies);
    const script = `const s = require('snappy'); const k = require('koffi');
      for (const d of ${JSON.stringify(deps)}) require(d);
      if (s.uncompressSync(s.compressSync(Buffer.from('oom')), { asBuffer: false }) !== 'oom') throw new Error('snappy');
      if (k.load('libc.so.6').func('int getpid(void)')() !== process.pid) throw new Error('koffi');
      process.stdout.write('ok')`;
    const out = execFileSync(path.join(lib, 'bin/node'), ['-e', script], { cwd: lib, encoding: 'utf8', env: { PATH: '/usr/bin:/bin', NODE_PATH: '' } });
    assert.equal(out, 'ok');
  });

  test(`its node is the pinned LTS v${PINNED}, and the agent loads the private libbpf by path`, { skip: process.getuid?.() !== 0 && 'needs root (BPF probes)' }, () => {
    const lib = path.join(root, 'usr/lib/oomtrail');
    const node = path.join(lib, 'bin/node');
    assert.equal(execFileSync(node, ['--version'], { encoding: 'utf8' }).trim(), `v${PINNED}`);
    const main = path.join(lib, 'dist/src/cli/main.js');
    assert.equal(execFileSync(node, [main, '--version'], { encoding: 'utf8' }).trim(), VERSION);
    // PATH without this machine's node: the unpacked agent needs none
    const out = execFileSync(node, [main, 'check', '--json'], { encoding: 'utf8', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, maxBuffer: 16 << 20 });
    const check = JSON.parse(out) as { runtime: { node: string; node_path: string; libbpf_path: string | null }; selected: string | null };
    assert.equal(check.runtime.node, `v${PINNED}`);
    assert.equal(check.runtime.node_path, node);
    assert.equal(check.runtime.libbpf_path, path.join(lib, 'lib/libbpf.so.1'), 'the private libbpf, not the host one');
    assert.ok(check.selected, `a hook with the private libbpf:\n${out.slice(0, 3000)}`);
  });
});
