import fs from 'node:fs';
import path from 'node:path';

/** Why a path the agent must write cannot be used: the errno it stands for, and the reason in words. */
export interface PathProblem {
  code: string;
  why: string;
}

/**
 * Whether the agent could use a path it must write, asked without changing the host (`oomtrail check` and the
 * file sink's healthcheck run it too): an existing directory (or file) must be one and be writable; a missing one
 * must be creatable under its nearest existing ancestor (a directory, writable, with a free inode). Returns why
 * not, or null.
 *
 * access(2) answers for this process's uid and capabilities and says EROFS on a read-only mount, so root is told
 * about read-only file systems too.
 */
export function pathProblem(p: string, kind: 'directory' | 'file'): PathProblem | null {
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(p);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOTDIR') return { code, why: `cannot be created: ${nonDirectoryAncestor(p) ?? 'a parent'} is not a directory` };
    if (code !== 'ENOENT') return { code, why: `cannot be examined (${code})` };
  }
  if (st) {
    if (kind === 'directory' && !st.isDirectory()) return { code: 'ENOTDIR', why: `is ${describe(st)}, not a directory` };
    if (kind === 'file' && st.isDirectory()) return { code: 'EISDIR', why: 'is a directory' };
    const denied = accessDenied(p, kind === 'directory' ? fs.constants.W_OK | fs.constants.X_OK : fs.constants.W_OK);
    return denied ? { code: denied, why: `is not writable (${deniedText(denied)})` } : null;
  }
  // missing: the nearest existing ancestor decides whether it can be created
  let parent = path.dirname(p);
  for (;;) {
    try {
      const pst = fs.statSync(parent);
      if (!pst.isDirectory()) return { code: 'ENOTDIR', why: `cannot be created: ${parent} is ${describe(pst)}, not a directory` };
      break;
    } catch (err) {
      const code = errnoOf(err);
      if (code !== 'ENOENT') return { code, why: `cannot be created: ${parent}: ${code}` };
      if (parent === path.dirname(parent)) return { code, why: 'cannot be created: no existing parent directory' };
      parent = path.dirname(parent);
    }
  }
  const denied = accessDenied(parent, fs.constants.W_OK | fs.constants.X_OK);
  if (denied) return { code: denied, why: `cannot be created: ${parent} is not writable (${deniedText(denied)})` };
  try {
    const sfs = fs.statfsSync(parent);
    // tmpfs and most file systems report their inode budget; 0 free means nothing new can be made there
    if (sfs.files > 0 && sfs.ffree === 0) return { code: 'ENOSPC', why: `cannot be created: no free inode on the file system of ${parent} (ENOSPC)` };
  } catch {
    /* statfs only adds detail */
  }
  return null;
}

/** `pathProblem`'s reason alone, for messages that name the key and the path themselves. */
export function unusablePath(p: string, kind: 'directory' | 'file'): string | null {
  return pathProblem(p, kind)?.why ?? null;
}

/** `p` if it exists, else its nearest existing ancestor: where a first write to `p` would land. */
export function nearestExisting(p: string): string {
  for (let a = p; ; a = path.dirname(a)) {
    if (fs.existsSync(a) || a === path.dirname(a)) return a;
  }
}

/** The errno access(2) gives for `mode` on `p`, or null when allowed. */
function accessDenied(p: string, mode: number): string | null {
  try {
    fs.accessSync(p, mode);
    return null;
  } catch (err) {
    return errnoOf(err);
  }
}

const deniedText = (code: string): string => (code === 'EROFS' ? 'EROFS: read-only file system' : code);

function nonDirectoryAncestor(p: string): string | null {
  for (let a = path.dirname(p); a !== path.dirname(a); a = path.dirname(a)) {
    try {
      if (!fs.statSync(a).isDirectory()) {
        let top = a; // the outermost non-directory names the mistake
        for (let b = path.dirname(a); b !== path.dirname(b); b = path.dirname(b)) {
          try {
            if (!fs.statSync(b).isDirectory()) top = b;
          } catch {
            /* keep top */
          }
        }
        return top;
      }
    } catch {
      /* ENOTDIR further up: keep climbing */
    }
  }
  return null;
}

/** `a regular file`, `a FIFO`, … for messages. */
export function describe(st: fs.Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

export function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'error';
}

/**
 * The content of a file that must be a regular file of at most `maxBytes`: opened O_NONBLOCK (a FIFO would block
 * the open, and the reading thread, until a writer comes) and checked with fstat before any read. Throws an
 * Error whose `code` is the errno, `ENOTREG` (not a regular file) or `EFBIG`; its message never holds content.
 */
export function readRegularFile(file: string, maxBytes: number): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw notRegular(st);
    if (st.size > maxBytes) throw Object.assign(new Error(`is larger than ${maxBytes} bytes`), { code: 'EFBIG' });
    const buf = Buffer.alloc(maxBytes + 1);
    let n = 0;
    for (let r; n <= maxBytes && (r = fs.readSync(fd, buf, n, maxBytes + 1 - n, null)) > 0; ) n += r;
    if (n > maxBytes) throw Object.assign(new Error(`is larger than ${maxBytes} bytes`), { code: 'EFBIG' });
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

function notRegular(st: fs.Stats): Error {
  return st.isDirectory()
    ? Object.assign(new Error('is a directory, not a regular file (EISDIR)'), { code: 'EISDIR' })
    : Object.assign(new Error(`is ${describe(st)}, not a regular file`), { code: 'ENOTREG' });
}

/** The same, asynchronously (a secret re-read at each request). */
export async function readRegularFileAsync(file: string, maxBytes: number): Promise<Buffer> {
  const h = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  try {
    const st = await h.stat();
    if (!st.isFile()) throw notRegular(st);
    if (st.size > maxBytes) throw Object.assign(new Error(`is larger than ${maxBytes} bytes`), { code: 'EFBIG' });
    const buf = Buffer.alloc(maxBytes + 1);
    let n = 0;
    for (let r; n <= maxBytes && (r = (await h.read(buf, n, maxBytes + 1 - n, null)).bytesRead) > 0; ) n += r;
    if (n > maxBytes) throw Object.assign(new Error(`is larger than ${maxBytes} bytes`), { code: 'EFBIG' });
    return buf.subarray(0, n);
  } finally {
    await h.close();
  }
}
