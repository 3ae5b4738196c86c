import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { OomRecord } from '../../record/record';
import { encodeRecordJson } from '../../record/json';
import type { HealthStatus, Sink, WriteResult } from '../sink';
import { nearestExisting, pathProblem } from '../../host/paths';

export interface FileSinkConfig {
  path: string;
  batchMaxAgeMs?: number;
}

/**
 * JSON Lines, one record per line; every batch is written in one append and fsync'd before it counts.
 * Before each batch the sink checks that its path still names the open file and reopens it otherwise,
 * so logrotate (`create` or `copytruncate`), `mv` and `rm` need no signal; SIGHUP forces a reopen.
 */
export class FileSink implements Sink {
  readonly name = 'file';
  readonly batchMaxAgeMs?: number;
  private handle: fs.FileHandle | null = null;
  private reopenRequested = false;

  constructor(private readonly config: FileSinkConfig) {
    this.batchMaxAgeMs = config.batchMaxAgeMs;
  }

  /**
   * Reopen the file before the next write: SIGHUP, logrotate's `postrotate` convention. Writes notice a
   * renamed or deleted path on their own, so this only makes the reopen unconditional.
   */
  reopen(): void {
    this.reopenRequested = true;
  }

  private async open(): Promise<fs.FileHandle> {
    if (this.handle && (this.reopenRequested || (await this.moved(this.handle)))) await this.close();
    this.reopenRequested = false;
    if (!this.handle) {
      // records name every tenant's commands and cgroups: private, whatever the umask (Docker's is 022);
      // an existing file keeps the mode its owner (or logrotate's `create`) gave it
      await fs.mkdir(path.dirname(this.config.path), { recursive: true, mode: 0o700 });
      this.handle = await fs.open(this.config.path, 'a', 0o600);
    }
    return this.handle;
  }

  /** True when the path no longer names the open file: rotated (logrotate `create`, mv) or deleted (rm). */
  private async moved(handle: fs.FileHandle): Promise<boolean> {
    const [open, now] = await Promise.all([handle.stat(), fs.stat(this.config.path).catch(() => null)]);
    return now === null || now.ino !== open.ino || now.dev !== open.dev;
  }

  async write(batch: readonly OomRecord[]): Promise<WriteResult> {
    const data = batch.map((r) => encodeRecordJson(r) + '\n').join('');
    // A file deleted between the check in open() and the write took the batch with it: write it again to
    // the new file (a rename keeps the batch in the rotated file, which is where it belongs).
    for (let attempt = 0; ; attempt++) {
      const res = await this.append(data);
      if (res !== 'unlinked') return res;
      if (attempt >= 2) return { status: 'retryable', reason: `${this.config.path}: deleted while being written` };
    }
  }

  private async append(data: string): Promise<WriteResult | 'unlinked'> {
    let handle: fs.FileHandle | null = null;
    let size = -1;
    try {
      handle = await this.open();
      size = (await handle.stat()).size;
      await handle.appendFile(data);
      await handle.sync();
      if ((await handle.stat()).nlink === 0) {
        await this.close();
        return 'unlinked';
      }
      return { status: 'delivered' };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'UNKNOWN';
      // a short append would leave half a line for the retry to follow: cut back to where it began
      if (handle && size >= 0) await handle.truncate(size).catch(() => undefined);
      await this.close();
      // no record is ever invalid for a file: every failure (full disk, permissions) is the
      // environment's, so it is retried (the spool holds the records) rather than dead-lettered
      return { status: 'retryable', reason: `${this.config.path}: ${code}: ${(err as Error).message}` };
    }
  }

  async flush(): Promise<void> {
    await this.handle?.sync();
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    await h?.close().catch(() => undefined);
  }

  /**
   * Whether an append could succeed now, found by looking only (a check must not change the host: nothing is
   * created or written): the path is usable as `oomtrail check` asks it (not a directory, writable, or creatable
   * under a writable directory with a free inode), and the filesystem the append lands on has space.
   */
  async healthcheck(): Promise<HealthStatus> {
    const file = this.config.path;
    const problem = pathProblem(file, 'file');
    if (problem) return { healthy: false, detail: `${problem.code}: ${file}: ${problem.why}` };
    const where = nearestExisting(file);
    try {
      if ((await fs.statfs(where)).bavail === 0) return { healthy: false, detail: `ENOSPC: ${file}: no space left on the filesystem of ${where}` };
    } catch (err) {
      // the errno's message names the code and the path
      return { healthy: false, detail: (err as Error).message };
    }
    return { healthy: true };
  }
}
