import { CompressionTypes, Kafka, type Admin, type Producer, type KafkaConfig } from 'kafkajs';
import { retrySettings } from './retry';
import type { Logger } from '../../observe/logger';
import type { OomRecord } from '../../record/record';
import type { HealthStatus, RejectedRecord, Sink, WriteResult } from '../sink';
import type { KafkaSinkConfig } from './config';
import { chunkBySize, encodeMessage, messageSize, type KafkaMessage } from './encoder';
import { classifyKafkaError, type KafkaClassified } from './errors';

export interface KafkaSinkOptions {
  config: KafkaSinkConfig;
  logger: Logger;
  /** The client settings, from kafkaClientConfig (client.ts). */
  client: KafkaConfig;
}

/**
 * Publishes one message per record (encoder.ts) with an idempotent kafkajs producer (acks=all,
 * maxInFlightRequests 1): broker-side dedup per (producer id, partition, sequence) makes resends after lost
 * acknowledgements and broker restarts exactly-once in the topic. Writes are serialized (concurrent sends on one
 * idempotent producer race on sequence numbers). A batch larger than message_max_bytes goes as several sends; if
 * a later one fails, the event ids already acknowledged are remembered and skipped when the lane retries the
 * batch, so that path adds no duplicates either. Not exactly-once everywhere: after UNKNOWN_PRODUCER_ID /
 * OUT_OF_ORDER_SEQUENCE_NUMBER the producer is replaced (a new producer id, kafkajs has no way to keep the old
 * one's sequence), and a send whose outcome was unknown is resent under the new id, which the broker cannot
 * dedup: at-least-once per event_id, exactly once after the relay's ReplacingMergeTree (FINAL). Never throws.
 */
export class KafkaSink implements Sink {
  readonly name = 'kafka';
  private readonly kafka: Kafka;
  private producer: Producer | null = null;
  private connecting: Promise<Producer> | null = null;
  private topicChecked = false;
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();
  /** Event ids acknowledged from a batch whose later send failed: skipped when the lane retries it. */
  private acked = new Set<string>();
  private lastLogged: { reason: string; at: number } | null = null;
  private readonly compression: CompressionTypes;
  /** Counters for tests and the benchmark. */
  readonly stats = { sends: 0, messages: 0, skippedResends: 0, producerResets: 0 };

  constructor(private readonly opts: KafkaSinkOptions) {
    const c = opts.config;
    const kc = opts.client;
    this.kafka = new Kafka(kc);
    this.compression = c.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None;
  }

  private async getProducer(): Promise<Producer> {
    if (this.producer) return this.producer;
    if (!this.connecting) {
      const p = this.kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        allowAutoTopicCreation: false,
        retry: retrySettings(this.opts.config.retries),
      });
      this.connecting = p
        .connect()
        .then(() => {
          this.producer = p;
          return p;
        })
        .finally(() => {
          this.connecting = null;
        });
    }
    return this.connecting;
  }

  private async resetProducer(): Promise<void> {
    const p = this.producer;
    this.producer = null;
    this.stats.producerResets++;
    if (p) await p.disconnect().catch(() => undefined);
  }

  private async withAdmin<T>(fn: (admin: Admin) => Promise<T>): Promise<T> {
    const admin = this.kafka.admin({ retry: retrySettings(Math.min(this.opts.config.retries, 2)) });
    await admin.connect();
    try {
      return await fn(admin);
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  /** Whether the topic exists (a metadata request for all topics: never auto-creates it). */
  private async topicExists(admin: Admin): Promise<boolean> {
    return (await admin.listTopics()).includes(this.opts.config.topic);
  }

  /** Before the first send: with create_topic, creates a missing topic. */
  private async ensureTopic(): Promise<void> {
    if (this.topicChecked || !this.opts.config.create_topic) return;
    await this.withAdmin(async (admin) => {
      if (!(await this.topicExists(admin))) {
        await admin.createTopics({ topics: [{ topic: this.opts.config.topic }], waitForLeaders: true });
        this.opts.logger.info(`kafka: created topic ${this.opts.config.topic}`, { sink: 'kafka' });
      }
    });
    this.topicChecked = true;
  }

  // --- Sink ----------------------------------------------------------------------------------------------------

  write(batch: readonly OomRecord[]): Promise<WriteResult> {
    const run = this.queue.then(() => this.writeNow(batch));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async writeNow(batch: readonly OomRecord[]): Promise<WriteResult> {
    if (batch.length === 0) return { status: 'delivered' };
    if (this.closed) return { status: 'retryable', reason: 'sink closed' };
    const c = this.opts.config;
    const rejected: RejectedRecord[] = [];
    const pending: Array<{ record: OomRecord; msg: KafkaMessage; size: number }> = [];
    for (const record of batch) {
      if (this.acked.has(record.event_id)) {
        this.stats.skippedResends++;
        continue;
      }
      let msg: KafkaMessage;
      try {
        msg = encodeMessage(record, c.key);
      } catch (err) {
        rejected.push({ record, reason: `kafka: encoding failed: ${(err as Error).message}` });
        continue;
      }
      const size = messageSize(msg);
      if (size > c.message_max_bytes) {
        rejected.push({ record, reason: `kafka: MESSAGE_TOO_LARGE: the message is ${size} bytes, message_max_bytes is ${c.message_max_bytes}` });
        continue;
      }
      pending.push({ record, msg, size });
    }
    let producer: Producer;
    try {
      await this.ensureTopic();
      producer = await this.getProducer();
    } catch (err) {
      return this.result(classifyKafkaError(err), 'connect');
    }
    for (const chunk of chunkBySize(pending, (p) => p.size, c.message_max_bytes)) {
      try {
        await producer.send({
          topic: c.topic,
          acks: -1,
          timeout: c.request_timeout_ms,
          compression: this.compression,
          messages: chunk.map((p) => p.msg),
        });
        this.stats.sends++;
        this.stats.messages += chunk.length;
        for (const p of chunk) this.acked.add(p.record.event_id);
      } catch (err) {
        const k = classifyKafkaError(err);
        if (k.class === 'data') {
          // the broker refused this send for good: dead-letter its records, keep going with the rest
          for (const p of chunk) rejected.push({ record: p.record, reason: `kafka ${c.topic}: ${k.reason}` });
          continue;
        }
        if (k.class === 'producer') await this.resetProducer();
        return this.result(k, 'send');
      }
    }
    this.acked.clear();
    this.lastLogged = null;
    if (rejected.length === batch.length) return { status: 'rejected', reason: rejected[0]!.reason };
    return rejected.length > 0 ? { status: 'delivered', rejectedRecords: rejected } : { status: 'delivered' };
  }

  async flush(): Promise<void> {
    await this.queue; // a write resolves only when the brokers acknowledged
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    const p = this.producer ?? (await this.connecting?.catch(() => null)) ?? null;
    this.producer = null;
    if (p) await p.disconnect().catch(() => undefined);
  }

  /** Metadata request for the topic: brokers reachable (and SASL/TLS accepted), topic present with partitions. */
  async healthcheck(): Promise<HealthStatus> {
    const topic = this.opts.config.topic;
    try {
      return await this.withAdmin(async (admin) => {
        if (!(await this.topicExists(admin))) {
          return {
            healthy: false,
            detail: `topic ${topic} does not exist on ${this.opts.client.brokers as string[]}${this.opts.config.create_topic ? ' (create_topic: it is created before the first send)' : ' (create it, or set sinks.kafka.create_topic: true)'}`,
          };
        }
        const md = await admin.fetchTopicMetadata({ topics: [topic] });
        const parts = md.topics[0]?.partitions ?? [];
        const leaderless = parts.filter((p) => p.leader < 0).length;
        if (leaderless > 0) return { healthy: false, detail: `topic ${topic}: ${leaderless} of ${parts.length} partitions have no leader` };
        return { healthy: true, detail: `topic ${topic}: ${parts.length} partitions` };
      });
    } catch (err) {
      return { healthy: false, detail: classifyKafkaError(err).reason };
    }
  }

  // --- internals -----------------------------------------------------------------------------------------------

  private result(k: KafkaClassified, step: string): WriteResult {
    const reason = `kafka ${this.opts.config.topic} ${step}: ${k.reason}`;
    switch (k.class) {
      case 'data':
        return { status: 'rejected', reason };
      case 'transient':
      case 'producer':
        return { status: 'retryable', reason };
      case 'operator': {
        const afterMs = this.opts.config.config_error_retry_ms;
        const now = Date.now();
        if (!this.lastLogged || this.lastLogged.reason !== reason || now - this.lastLogged.at > 600_000) {
          this.lastLogged = { reason, at: now };
          const hint =
            k.type === 'UNKNOWN_TOPIC_OR_PARTITION'
              ? ` (does topic ${this.opts.config.topic} exist? create it, or set sinks.kafka.create_topic: true)`
              : /AUTHORIZATION_FAILED$/.test(k.type ?? '')
                ? ` (the broker's ACLs: allow this principal WRITE and DESCRIBE on topic ${this.opts.config.topic}${k.type === 'CLUSTER_AUTHORIZATION_FAILED' ? ' and IDEMPOTENT_WRITE on the cluster' : ''})`
                : '';
          this.opts.logger.error(`${reason}${hint}; records stay spooled, next attempt in ${afterMs} ms`, { sink: 'kafka' });
        }
        return { status: 'retryable', reason, afterMs };
      }
    }
  }
}
