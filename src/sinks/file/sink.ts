import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { OomRecord } from '../../record/record';
import { encodeRecordJson } from '../../record/json';
import type { HealthStatus, Sink, WriteResult } from '../sink';

export interface FileSinkConfig {
  path: string;
}

/** JSON Lines, one record per line; every batch is written in one append and fsync'd before it counts. */
export class FileSink implements Sink {
  readonly name = 'file';
  private handle: fs.FileHandle | null = null;

  constructor(private readonly config: FileSinkConfig) {}

  private async open(): Promise<fs.FileHandle> {
    if (!this.handle) {
      // records name every tenant's commands and cgroups: private, whatever the umask (Docker's is 022);
      // an existing file keeps the mode its owner (or logrotate's `create`) gave it
      await fs.mkdir(path.dirname(this.config.path), { recursive: true, mode: 0o700 });
      this.handle = await fs.open(this.config.path, 'a', 0o600);
    }
    return this.handle;
  }

  async write(batch: readonly OomRecord[]): Promise<WriteResult> {
    const data = batch.map((r) => encodeRecordJson(r) + '\n').join('');
    let handle: fs.FileHandle | null = null;
    let size = -1;
    try {
      handle = await this.open();
      size = (await handle.stat()).size;
      await handle.appendFile(data);
      await handle.sync();
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

  async healthcheck(): Promise<HealthStatus> {
    try {
      await fs.mkdir(path.dirname(this.config.path), { recursive: true, mode: 0o700 });
      await fs.access(path.dirname(this.config.path), fs.constants?.W_OK ?? 2);
      return { healthy: true };
    } catch (err) {
      return { healthy: false, detail: (err as Error).message };
    }
  }
}
