import type { AppConfig } from '../config/schema';
import type { Sink } from './sink';
import type { Logger } from '../observe/logger';
import { ConsoleSink } from './console/sink';
import { FileSink } from './file/sink';
import { createClickHouseSink } from './clickhouse';
import { createKafkaSink } from './kafka';
import { createLokiSink } from './loki';
import { createWebhookSink } from './webhook';

/** Adding a sink = one folder under src/sinks/ and one line here. */
const FACTORIES: Record<string, (config: AppConfig, logger: Logger) => Sink | null> = {
  console: (c) => (c.sinks.console.enabled ? new ConsoleSink({ format: c.sinks.console.format }) : null),
  file: (c) => (c.sinks.file.enabled ? new FileSink({ path: c.sinks.file.path }) : null),
  clickhouse: (c, logger) => (c.sinks.clickhouse.enabled ? createClickHouseSink(c.sinks.clickhouse, { logger }) : null),
  kafka: (c, logger) => (c.sinks.kafka.enabled ? createKafkaSink(c.sinks.kafka, { logger }) : null),
  loki: (c, logger) => (c.sinks.loki.enabled ? createLokiSink(c.sinks.loki, { logger }) : null),
  webhook: (c) => (c.sinks.webhook.enabled ? createWebhookSink(c.sinks.webhook) : null),
};

export function createSinks(config: AppConfig, logger: Logger): Sink[] {
  return Object.values(FACTORIES)
    .map((make) => make(config, logger))
    .filter((s): s is Sink => s !== null);
}
