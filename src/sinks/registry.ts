import type { AppConfig } from '../config/schema';
import type { Sink } from './sink';
import type { Logger } from '../observe/logger';
import { ConsoleSink } from './console/sink';
import { FileSink } from './file/sink';

// The network sinks are required only when enabled: their client libraries (@clickhouse/client,
// kafkajs, protobufjs + snappy) cost ~10-20 MB of heap and code each in an agent that does not use them.
/* eslint-disable @typescript-eslint/no-require-imports */
const clickhouse = (): typeof import('./clickhouse') => require('./clickhouse');
const kafka = (): typeof import('./kafka') => require('./kafka');
const loki = (): typeof import('./loki') => require('./loki');
const webhook = (): typeof import('./webhook') => require('./webhook');

/** Adding a sink = one folder under src/sinks/ and one line here. */
const FACTORIES: Record<string, (config: AppConfig, logger: Logger) => Sink | null> = {
  console: (c) => (c.sinks.console.enabled ? new ConsoleSink({ format: c.sinks.console.format }) : null),
  file: (c) => (c.sinks.file.enabled ? new FileSink({ path: c.sinks.file.path }) : null),
  clickhouse: (c, logger) => (c.sinks.clickhouse.enabled ? clickhouse().createClickHouseSink(c.sinks.clickhouse, { logger }) : null),
  kafka: (c, logger) => (c.sinks.kafka.enabled ? kafka().createKafkaSink(c.sinks.kafka, { logger }) : null),
  loki: (c, logger) => (c.sinks.loki.enabled ? loki().createLokiSink(c.sinks.loki, { logger }) : null),
  webhook: (c) => (c.sinks.webhook.enabled ? webhook().createWebhookSink(c.sinks.webhook) : null),
};

export function createSinks(config: AppConfig, logger: Logger): Sink[] {
  return Object.values(FACTORIES)
    .map((make) => make(config, logger))
    .filter((s): s is Sink => s !== null);
}
