import type { OomRecord } from '../../record/record';
import { encodeRecordJson } from '../../record/json';
import type { HealthStatus, Sink, WriteResult } from '../sink';
import { formatKillBlock } from './format';

export interface ConsoleSinkConfig {
  format: 'text' | 'json';
  batchMaxAgeMs?: number;
}

/** Writes records to stdout (logs go to stderr, so stdout stays readable and pipeable). */
export class ConsoleSink implements Sink {
  readonly name = 'console';
  readonly batchMaxAgeMs?: number;
  constructor(
    private readonly config: ConsoleSinkConfig,
    private readonly out: NodeJS.WritableStream = process.stdout,
  ) {
    this.batchMaxAgeMs = config.batchMaxAgeMs;
  }

  async write(batch: readonly OomRecord[]): Promise<WriteResult> {
    const text = batch.map((r) => (this.config.format === 'json' ? encodeRecordJson(r) + '\n' : formatKillBlock(r))).join('');
    return new Promise((resolve) => {
      this.out.write(text, (err) =>
        resolve(err ? { status: 'retryable', reason: `stdout: ${err.message}` } : { status: 'delivered' }),
      );
    });
  }

  async flush(): Promise<void> {}
  async close(): Promise<void> {}
  async healthcheck(): Promise<HealthStatus> {
    return { healthy: true };
  }
}
