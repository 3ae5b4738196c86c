/*
 * The .deb that `npm run package` builds (scripts/package-deb.sh), for the tests that check or install it: built once
 * per content of its inputs and version, kept in ${OOMTRAIL_CACHE:-~/.cache/oomtrail}/v1/pkg/debs/<key>/, so the
 * host-side package test and the VM package test of one `npm test` share one build (each test file is its own
 * process). Tests build with xz preset 0 (~6 s of CPU for the node binary instead of ~50 s at the release default 6;
 * the .deb is ~5 MB larger, its contents the same).
 */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const pexec = promisify(execFile);
const REPO = path.resolve(__dirname, '../../..');
const CACHE = path.join(process.env.OOMTRAIL_CACHE ?? path.join(os.homedir(), '.cache/oomtrail'), 'v1/pkg/debs');
/** What goes into the package (scripts/package-deb.sh): a change to any of these builds anew. */
const INPUTS = [
  'src',
  'bpf',
  'config/default.yaml',
  'systemd/oomtrail.service',
  'packaging',
  'runtime',
  'scripts/package-deb.sh',
  'scripts/node-runtime.sh',
  'test/vm/arm64-sysroot.sh',
  'test/vm/private-apt.sh',
  'package.json',
  'package-lock.json',
  'tsconfig.json',
  'tsconfig.package.json',
  'README.md',
];
export const TEST_XZ_LEVEL = '0';

function hashInputs(h: crypto.Hash, rel: string): void {
  const abs = path.join(REPO, rel);
  const st = fs.statSync(abs, { throwIfNoEntry: false });
  if (!st) return;
  if (st.isDirectory()) {
    for (const name of fs.readdirSync(abs).sort()) {
      if ((rel === 'bpf' || rel.startsWith('bpf/')) && name === 'vmlinux.h') continue;
      hashInputs(h, path.join(rel, name));
    }
    return;
  }
  h.update(`${rel}\0${st.mode & 0o111 ? 'x' : '-'}\0`);
  h.update(fs.readFileSync(abs));
}

export type DebArch = 'amd64' | 'arm64';

/** The path of oomtrail_<version>_<arch>.deb built from this tree (version default: package.json's). */
export async function builtDeb(version?: string, arch: DebArch = 'amd64'): Promise<{ deb: string; built: boolean; ms: number }> {
  const v = version ?? (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
  const h = crypto.createHash('sha256');
  for (const rel of INPUTS) hashInputs(h, rel);
  h.update(`version ${v} xz ${TEST_XZ_LEVEL} arch ${arch}`);
  const dir = path.join(CACHE, h.digest('hex').slice(0, 16));
  const deb = path.join(dir, `oomtrail_${v}_${arch}.deb`);
  if (fs.existsSync(deb)) return { deb, built: false, ms: 0 };
  const t0 = Date.now();
  fs.mkdirSync(dir, { recursive: true });
  // package-deb.sh holds a lock of its own: two test files asking at once build one after the other
  await pexec('bash', [path.join(REPO, 'scripts/package-deb.sh'), '--version', v, '--out', dir, '--arch', arch], {
    cwd: REPO,
    env: { ...process.env, OOMTRAIL_PKG_XZ_LEVEL: TEST_XZ_LEVEL },
    timeout: 900_000,
    maxBuffer: 16 << 20,
  });
  // older builds of other trees go: keep the 4 newest (both architectures of two trees)
  const old = fs
    .readdirSync(CACHE)
    .map((d) => ({ d: path.join(CACHE, d), t: fs.statSync(path.join(CACHE, d)).mtimeMs }))
    .sort((a, b) => b.t - a.t)
    .slice(4);
  for (const o of old) fs.rmSync(o.d, { recursive: true, force: true });
  return { deb, built: true, ms: Date.now() - t0 };
}
