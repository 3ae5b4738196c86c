import fs from 'node:fs';
import path from 'node:path';
import { Kafka, logLevel, type Consumer, type EachBatchPayload, type KafkaConfig, type KafkaMessage } from 'kafkajs';
import { ConfigError } from '../config/errors';
import type { AppConfig } from '../config/schema';
import type { Logger } from '../observe/logger';
import type { OomRecord } from '../record/record';
import { rotateBySize } from '../pipeline/rotate';
import { createClickHouseSink } from '../sinks/clickhouse';
import { kafkaClientConfig } from '../sinks/kafka/client';
import { retrySettings } from '../sinks/kafka/retry';
import type { KafkaSinkConfig } from '../sinks/kafka/config';
import type { Sink, WriteResult } from '../sinks/sink';
import { logSinkHealth } from '../sinks/health';

/** The message value for a dead letter: text when it is valid UTF-8, else base64. */
function valueOf(value: Buffer | null): Pick<RelayDeadLetter, 'value' | 'value_base64'> {
  if (value === null) return { value: null };
  const text = value.toString('utf8');
  return Buffer.from(text, 'utf8').equals(value) ? { value: text } : { value_base64: value.toString('base64') };
}

/**
 * `oomtrail relay`: the fleet path's consumer. Reads `sinks.kafka.topic` with the consumer group
 * `<sinks.kafka.client_id>-relay` and writes the records with the ClickHouse sink (`sinks.clickhouse.*`), the same
 * code and dedup the agent uses (ReplacingMergeTree by event_id, insert_deduplication_token per insert). Offsets
 * are committed only after ClickHouse acknowledged every record before them, so a crash re-reads at most the
 * uncommitted batch: re-inserted rows carry the same event_id and collapse (FINAL / after merges). A message that
 * is not a record (bad JSON, `null`, no event_id) and a record ClickHouse refuses for good are appended to the
 * relay's dead-letter file (`<pipeline.spool.dir>/relay.dead-letter.jsonl`, mode 0600, one JSON line each with
 * topic, partition, offset and the reason) and fsync'd before the offset is committed: the partition moves on and
 * nothing is lost silently. A crash between the two writes the same dead letter again after the re-read.
 * Why a subcommand and not a mode of the agent: it needs no BPF, no root, no host; it scales with the topic's
 * partitions (run one per partition or fewer, same group), and it uses the agent's config file and sinks.
 */
export interface RelayOptions {
  kafka: KafkaSinkConfig;
  sink: Sink;
  logger: Logger;
  groupId?: string;
  /** Records per ClickHouse insert (at most; a fetched batch is split). */
  insertMax?: number;
  retry?: { initial_ms: number; max_ms: number };
  /** JSON Lines file for messages that are not records and records ClickHouse refuses (created 0600). */
  deadLetterPath: string;
  /** `pipeline.dead_letter.*`: rotated by size like the lanes' dead-letter files */
  deadLetter?: { maxBytes: number; keep: number };
}

/** One line of the relay's dead-letter file. */
export interface RelayDeadLetter {
  time: string;
  reason: string;
  topic: string;
  partition: number;
  offset: string;
  /** The record, when the message was one (ClickHouse refused it). */
  record?: OomRecord;
  /** The message value as text, when it is not a record (null: a message without a value). */
  value?: string | null;
  /** The message value, base64, when it is not valid UTF-8. */
  value_base64?: string;
}

/** The message's record, or why it is not one. */
export function decodeMessage(value: Buffer | null): { record: OomRecord } | { reason: string } {
  if (value === null) return { reason: 'not a record: the message has no value' };
  let v: unknown;
  try {
    v = JSON.parse(value.toString('utf8'));
  } catch (err) {
    return { reason: `not a record: not JSON (${(err as Error).message})` };
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { reason: `not a record: a JSON ${v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v}` };
  // the identity of a record: without these, ClickHouse would store a row of defaults (unknown fields are skipped)
  const o = v as Record<string, unknown>;
  for (const k of ['event_id', 'time', 'host'] as const) {
    if (typeof o[k] !== 'string' || o[k] === '') return { reason: `not a record: no ${k}` };
  }
  return { record: v as OomRecord };
}

export interface RelayStats {
  consumed: number;
  inserted: number;
  rejected: number;
  undecodable: number;
  /** Lines written to the dead-letter file (undecodable + rejected, counting rewrites after a re-read). */
  deadLettered: number;
  commits: number;
  retries: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Relay {
  readonly stats: RelayStats = { consumed: 0, inserted: 0, rejected: 0, undecodable: 0, deadLettered: 0, commits: 0, retries: 0 };
  readonly groupId: string;
  readonly deadLetterPath: string;
  /** Where the records go: the ClickHouse sink. */
  readonly clickhouse: Sink;
  private readonly consumer: Consumer;
  private stopping = false;

  constructor(private readonly opts: RelayOptions) {
    const c = opts.kafka;
    this.groupId = opts.groupId ?? `${c.client_id}-relay`;
    this.deadLetterPath = opts.deadLetterPath;
    this.clickhouse = opts.sink;
    // the sink's client settings: brokers, SASL and TLS files checked the same way (exit 78 on bad ones)
    const kc: KafkaConfig = kafkaClientConfig(c, opts.logger);
    const kafka = new Kafka({ ...kc, clientId: `${c.client_id}-relay`, logLevel: logLevel.WARN });
    this.consumer = kafka.consumer({
      groupId: this.groupId,
      retry: retrySettings(c.retries),
      sessionTimeout: 30_000,
      heartbeatInterval: 3000,
      maxBytes: 32 * 1024 * 1024,
      maxBytesPerPartition: 16 * 1024 * 1024,
      allowAutoTopicCreation: false,
    });
  }

  async start(): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.opts.kafka.topic, fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (p) => this.eachBatch(p),
    });
  }

  private async eachBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const insertMax = this.opts.insertMax ?? 10_000;
    const msgs = batch.messages;
    for (let i = 0; i < msgs.length; i += insertMax) {
      const part = msgs.slice(i, i + insertMax);
      const records: OomRecord[] = [];
      const offsetOf = new Map<OomRecord, string>();
      const dead: RelayDeadLetter[] = [];
      const at = (m: KafkaMessage) => ({ topic: batch.topic, partition: batch.partition, offset: m.offset });
      for (const m of part) {
        const d = decodeMessage(m.value);
        if ('record' in d) {
          records.push(d.record);
          offsetOf.set(d.record, m.offset);
          continue;
        }
        this.stats.undecodable++;
        dead.push({ time: '', reason: d.reason, ...at(m), ...valueOf(m.value) });
      }
      if (dead.length > 0) {
        // one line per chunk, not per message: a topic full of junk must not flood the log
        const first = dead[0]!;
        this.opts.logger.error(`relay: ${dead.length} message(s) of ${batch.topic}/${batch.partition} are not records (first @${first.offset}: ${first.reason}); dead-lettered to ${this.opts.deadLetterPath}`);
      }
      this.stats.consumed += part.length;
      let attempt = 0;
      for (;;) {
        if (this.stopping || !isRunning() || isStale()) return; // not acknowledged: not committed, re-read later
        if (records.length === 0) break;
        const res = await this.write(records);
        if (res.status === 'delivered') {
          const refused = res.rejectedRecords ?? [];
          this.stats.inserted += records.length - refused.length;
          this.stats.rejected += refused.length;
          for (const r of refused) {
            dead.push({ time: '', reason: `clickhouse: ${r.reason}`, topic: batch.topic, partition: batch.partition, offset: offsetOf.get(r.record) ?? '?', record: r.record });
          }
          if (refused.length > 0) this.opts.logger.error(`relay: clickhouse refused ${refused.length} of ${records.length} records of ${batch.topic}/${batch.partition} (${refused[0]!.reason}); dead-lettered to ${this.opts.deadLetterPath}`);
          break;
        }
        if (res.status === 'rejected') {
          this.stats.rejected += records.length;
          for (const record of records) {
            dead.push({ time: '', reason: `clickhouse: ${res.reason}`, topic: batch.topic, partition: batch.partition, offset: offsetOf.get(record) ?? '?', record });
          }
          this.opts.logger.error(`relay: clickhouse refused ${records.length} records of ${batch.topic}/${batch.partition}@${part[0]!.offset}: ${res.reason}; dead-lettered to ${this.opts.deadLetterPath}`);
          break;
        }
        this.stats.retries++;
        const delay = this.backoff(attempt++, res.afterMs);
        if (attempt <= 1 || attempt % 10 === 0) this.opts.logger.warn(`relay: clickhouse: ${res.reason}; retrying in ${Math.round(delay)} ms`);
        if (!(await this.pause(delay, heartbeat))) return;
      }
      // the dead letters are on disk before the offset moves past them
      if (dead.length > 0 && !(await this.deadLetter(dead, heartbeat))) return;
      // ClickHouse acknowledged everything up to here: only now the offset moves
      const last = part[part.length - 1]!.offset;
      resolveOffset(last);
      await this.consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(last) + 1n).toString() }]);
      this.stats.commits++;
      await heartbeat();
    }
  }

  /** The sink never throws by contract; if it does anyway, the batch is retried, never skipped. */
  private async write(records: OomRecord[]): Promise<WriteResult> {
    try {
      return await this.opts.sink.write(records);
    } catch (err) {
      return { status: 'retryable', reason: `sink threw: ${(err as Error).message}` };
    }
  }

  private backoff(attempt: number, afterMs?: number): number {
    const r = this.opts.retry ?? { initial_ms: 500, max_ms: 30_000 };
    return afterMs ?? Math.min(r.max_ms, r.initial_ms * 2 ** Math.min(attempt, 16)) * (0.8 + Math.random() * 0.4);
  }

  /** Sleeps `ms` while heartbeating; false when the relay is stopping. */
  private async pause(ms: number, heartbeat: () => Promise<void>): Promise<boolean> {
    const until = Date.now() + ms;
    while (Date.now() < until && !this.stopping) {
      await sleep(Math.min(1000, until - Date.now()));
      await heartbeat().catch(() => undefined);
    }
    return !this.stopping;
  }

  /** Appends and fsyncs the dead letters (file mode 0600); retries until it succeeds; false when stopping first. */
  private async deadLetter(dead: RelayDeadLetter[], heartbeat: () => Promise<void>): Promise<boolean> {
    const time = new Date().toISOString();
    const text = dead.map((d) => JSON.stringify({ ...d, time })).join('\n') + '\n';
    for (let attempt = 0; ; attempt++) {
      try {
        await fs.promises.mkdir(path.dirname(this.opts.deadLetterPath), { recursive: true, mode: 0o700 });
        if (this.opts.deadLetter) {
          const { maxBytes, keep } = this.opts.deadLetter;
          const rotated = await rotateBySize(this.opts.deadLetterPath, Buffer.byteLength(text), maxBytes, keep);
          if (rotated > 0) this.opts.logger.info(`relay: dead-letter file rotated (${rotated} bytes, keep ${keep}): ${this.opts.deadLetterPath}`);
        }
        const fh = await fs.promises.open(this.opts.deadLetterPath, 'a', 0o600);
        try {
          await fh.writeFile(text);
          await fh.datasync();
        } finally {
          await fh.close();
        }
        this.stats.deadLettered += dead.length;
        return true;
      } catch (err) {
        const delay = this.backoff(attempt);
        if (attempt === 0 || attempt % 10 === 9) {
          this.opts.logger.error(`relay: cannot write the dead-letter file ${this.opts.deadLetterPath} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); the offset is not committed, retrying in ${Math.round(delay)} ms`);
        }
        if (!(await this.pause(delay, heartbeat))) return false;
      }
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.consumer.disconnect();
    await this.opts.sink.close();
  }
}

/** Builds the relay from the agent's config: sinks.kafka (where to read) and sinks.clickhouse (where to write). */
export function createRelay(config: AppConfig, logger: Logger): Relay {
  const deadLetterPath = path.join(config.pipeline.spool.dir, 'relay.dead-letter.jsonl');
  try {
    // checked before consuming: a relay that cannot keep its dead letters must not start skipping messages
    fs.mkdirSync(config.pipeline.spool.dir, { recursive: true, mode: 0o700 });
    fs.accessSync(config.pipeline.spool.dir, fs.constants.W_OK);
  } catch (err) {
    throw new ConfigError([
      {
        code: 'CONFIG_INVALID',
        key: 'pipeline.spool.dir',
        message: `pipeline.spool.dir: ${config.pipeline.spool.dir} is not a writable directory (${(err as NodeJS.ErrnoException).code ?? 'error'}); the relay keeps its dead letters there`,
      },
    ]);
  }
  const sink = createClickHouseSink(config.sinks.clickhouse, { logger });
  return new Relay({
    kafka: config.sinks.kafka,
    sink,
    logger,
    retry: config.pipeline.retry,
    deadLetterPath,
    deadLetter: { maxBytes: config.pipeline.dead_letter.max_bytes, keep: config.pipeline.dead_letter.keep },
  });
}

/** `oomtrail relay`: runs until SIGINT/SIGTERM, then stops consuming (the current insert finishes) and exits 0. */
export async function runRelay(config: AppConfig, logger: Logger): Promise<number> {
  const relay = createRelay(config, logger);
  // logged, never fatal, beside the Kafka connect: a batch waits (its offsets uncommitted) until ClickHouse answers
  void logSinkHealth([relay.clickhouse], logger, 'batches wait, offsets uncommitted, until it answers');
  try {
    await relay.start();
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    // brokers down or unresolvable after the client's retries: exit 1, for the supervisor to try again later
    const e = err as Error & { cause?: Error };
    const why = e.cause && e.cause.message !== e.message ? `${e.message} (${e.cause.message})` : e.message;
    logger.error(`relay: cannot consume ${config.sinks.kafka.topic} from kafka ${config.sinks.kafka.brokers}: ${why}`);
    return 1;
  }
  logger.info(`oomtrail relay started: ${config.sinks.kafka.topic} (group ${relay.groupId}) -> clickhouse ${config.sinks.clickhouse.url}; dead letters: ${relay.deadLetterPath}`);
  const progress = setInterval(() => logger.info('relay progress', { ...relay.stats }), 10_000);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  clearInterval(progress);
  await relay.stop();
  logger.info('oomtrail relay stopped', { ...relay.stats });
  return 0;
}
