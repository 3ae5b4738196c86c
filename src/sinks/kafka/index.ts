import { createLogger, type Logger } from '../../observe/logger';
import type { KafkaSinkConfig } from './config';
import { definition } from './definition';
import type { KafkaSink } from './sink';

export { KafkaSink } from './sink';
export { retrySettings } from './retry';
export { kafkaClientConfig } from './client';
export { kafkaConfigSchema, type KafkaSinkConfig } from './config';
export { encodeMessage } from './encoder';
export { classifyKafkaError } from './errors';

export interface KafkaSinkDeps {
  /** Default: a stderr logger at info. */
  logger?: Logger;
}

/** Builds the Kafka sink from `sinks.kafka.*` (definition.ts); throws ConfigError (exit 78) naming the key. */
export function createKafkaSink(config: KafkaSinkConfig, deps: KafkaSinkDeps = {}): KafkaSink {
  return definition.create(config, { logger: deps.logger ?? createLogger('info', 'text') }) as KafkaSink;
}
