import { createLogger } from '../../observe/logger';
import type { Sink } from '../sink';
import type { LokiSinkConfig } from './config';
import { definition } from './definition';
import type { LokiSinkOptions } from './sink';

export { LokiSink, type LokiSinkOptions, type LokiSinkStats } from './sink';
export { lokiConfigSchema, type LokiSinkConfig } from './config';

/** Builds the Loki sink (definition.ts). Without a logger the sink logs warnings to stderr like the agent's default logger. */
export function createLokiSink(config: LokiSinkConfig, opts: LokiSinkOptions = {}): Sink {
  return definition.create(config, { logger: opts.logger ?? createLogger('info') });
}
