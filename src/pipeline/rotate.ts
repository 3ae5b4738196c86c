import { promises as fsp } from 'node:fs';

/**
 * Size-capped files kept as `<file>`, `<file>.1` … `<file>.<keep>`: when `adding` more bytes would take
 * `file` past `maxBytes`, `.1` becomes `.2` (…) and `file` becomes `.1` (keep 0: it is deleted). Returns
 * the size of the file rotated away, 0 when nothing moved. Renames keep each file's 0600 mode.
 */
export async function rotateBySize(file: string, adding: number, maxBytes: number, keep: number): Promise<number> {
  const size = await fsp.stat(file).then((st) => st.size, () => 0);
  if (size === 0 || size + adding <= maxBytes) return 0;
  const name = (i: number): string => (i === 0 ? file : `${file}.${i}`);
  if (keep === 0) await fsp.rm(file, { force: true });
  for (let i = keep; i >= 1; i--) {
    await fsp.rename(name(i - 1), name(i)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
  return size;
}
