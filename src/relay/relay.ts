import { Kafka, logLevel, type Consumer, type EachBatchPayload, type KafkaConfig } from 'kafkajs';
import type { AppConfig } from '../config/schema';
import type { Logger } from '../observe/logger';
import type { OomRecord } from '../record/record';
import { createClickHouseSink } from '../sinks/clickhouse';
import { createKafkaSink, retrySettings } from '../sinks/kafka';
import type { KafkaSinkConfig } from '../sinks/kafka/config';
import type { Sink } from '../sinks/sink';

/**
 * `oomtrail relay`: the fleet path's consumer. Reads `sinks.kafka.topic` with the consumer group
 * `<sinks.kafka.client_id>-relay` and writes the records with the ClickHouse sink (`sinks.clickhouse.*`), the same
 * code and dedup the agent uses (ReplacingMergeTree by event_id, insert_deduplication_token per insert). Offsets
 * are committed only after ClickHouse acknowledged every record before them, so a crash re-reads at most the
 * uncommitted batch: re-inserted rows carry the same event_id and collapse (FINAL / after merges). Records
 * ClickHouse refuses for good are logged (with the reason) and skipped; unparsable messages likewise.
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
}

export interface RelayStats {
  consumed: number;
  inserted: number;
  rejected: number;
  undecodable: number;
  commits: number;
  retries: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Relay {
  readonly stats: RelayStats = { consumed: 0, inserted: 0, rejected: 0, undecodable: 0, commits: 0, retries: 0 };
  readonly groupId: string;
  private readonly consumer: Consumer;
  private stopping = false;

  constructor(private readonly opts: RelayOptions) {
    const c = opts.kafka;
    this.groupId = opts.groupId ?? `${c.client_id}-relay`;
    // the sink's factory checks brokers, SASL and TLS files (exit 78 on bad ones); reuse its parsed client settings
    const sinkForConfig = createKafkaSink(c, { logger: opts.logger });
    const kc: KafkaConfig = sinkForConfig.kafkaConfig;
    void sinkForConfig.close();
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
      for (const m of part) {
        try {
          records.push(JSON.parse(m.value?.toString('utf8') ?? '') as OomRecord);
        } catch (err) {
          this.stats.undecodable++;
          this.opts.logger.error(`relay: ${batch.topic}/${batch.partition}@${m.offset} is not a record (${(err as Error).message}); skipped`);
        }
      }
      this.stats.consumed += part.length;
      let attempt = 0;
      for (;;) {
        if (this.stopping || !isRunning() || isStale()) return; // not acknowledged: not committed, re-read later
        const res = await this.opts.sink.write(records);
        if (res.status === 'delivered') {
          const refused = res.rejectedRecords?.length ?? 0;
          this.stats.inserted += records.length - refused;
          this.stats.rejected += refused;
          for (const r of res.rejectedRecords ?? []) this.opts.logger.error(`relay: clickhouse refused ${r.record.event_id}: ${r.reason}`);
          break;
        }
        if (res.status === 'rejected') {
          this.stats.rejected += records.length;
          this.opts.logger.error(`relay: clickhouse refused ${records.length} records of ${batch.topic}/${batch.partition}@${part[0]!.offset}: ${res.reason}`);
          break;
        }
        this.stats.retries++;
        const r = this.opts.retry ?? { initial_ms: 500, max_ms: 30_000 };
        const delay = res.afterMs ?? Math.min(r.max_ms, r.initial_ms * 2 ** Math.min(attempt++, 16)) * (0.8 + Math.random() * 0.4);
        if (attempt <= 1 || attempt % 10 === 0) this.opts.logger.warn(`relay: clickhouse: ${res.reason}; retrying in ${Math.round(delay)} ms`);
        const until = Date.now() + delay;
        while (Date.now() < until && !this.stopping) {
          await sleep(Math.min(1000, until - Date.now()));
          await heartbeat().catch(() => undefined);
        }
      }
      // ClickHouse acknowledged everything up to here: only now the offset moves
      const last = part[part.length - 1]!.offset;
      resolveOffset(last);
      await this.consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(last) + 1n).toString() }]);
      this.stats.commits++;
      await heartbeat();
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
  const sink = createClickHouseSink(config.sinks.clickhouse, { logger });
  return new Relay({ kafka: config.sinks.kafka, sink, logger, retry: config.pipeline.retry });
}

/** `oomtrail relay`: runs until SIGINT/SIGTERM, then stops consuming (the current insert finishes) and exits 0. */
export async function runRelay(config: AppConfig, logger: Logger): Promise<number> {
  const relay = createRelay(config, logger);
  await relay.start();
  logger.info(`oomtrail relay started: ${config.sinks.kafka.topic} (group ${relay.groupId}) -> clickhouse ${config.sinks.clickhouse.url}`);
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
