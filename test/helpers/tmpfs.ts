import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const FILLER = '.filler';

/** A small tmpfs mounted on `dir` (created if missing): a disk that can be made full and freed again. Root only. */
export class SmallTmpfs {
  private mounted = false;

  constructor(readonly dir: string, readonly sizeKiB = 256) {}

  mount(): void {
    fs.mkdirSync(this.dir, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${this.sizeKiB}k,mode=0755`, 'oomtrail-e2e', this.dir]);
    this.mounted = true;
  }

  /** Writes a filler file until ENOSPC, so an append to a new or empty file there fails. Returns bytes written. */
  fill(): number {
    const fd = fs.openSync(path.join(this.dir, FILLER), 'a');
    const page = Buffer.alloc(4096, 0x5a);
    let bytes = 0;
    try {
      for (;;) bytes += fs.writeSync(fd, page);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    } finally {
      fs.closeSync(fd);
    }
    return bytes;
  }

  /** Deletes the filler: appends work again. */
  free(): void {
    fs.rmSync(path.join(this.dir, FILLER), { force: true });
  }

  /** Unmounts (lazily if still busy) and removes the mount point. Safe to call twice. */
  unmount(): void {
    if (this.mounted) {
      try {
        execFileSync('umount', [this.dir]);
      } catch {
        execFileSync('umount', ['-l', this.dir]);
      }
      this.mounted = false;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
