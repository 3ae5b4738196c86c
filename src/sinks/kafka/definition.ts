import type { SinkDefinition } from '../sink';
import { checkKafkaConfig, kafkaConfigSchema, preflightKafka, type KafkaSinkConfig } from './config';

/* eslint-disable @typescript-eslint/no-require-imports -- kafkajs is loaded only for an enabled sink */
export const definition: SinkDefinition<KafkaSinkConfig> = {
  name: 'kafka',
  schema: kafkaConfigSchema,
  check: checkKafkaConfig,
  preflight: preflightKafka,
  create(config, { logger }) {
    const { kafkaClientConfig } = require('./client') as typeof import('./client');
    const { KafkaSink } = require('./sink') as typeof import('./sink');
    return new KafkaSink({ config, logger, client: kafkaClientConfig(config, logger) });
  },
};
