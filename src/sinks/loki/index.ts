import type { Sink } from '../sink';
import type { LokiSinkConfig } from './config';
import { LokiSink, type LokiSinkOptions } from './sink';
import { createLogger } from '../../observe/logger';

export { LokiSink, type LokiSinkOptions, type LokiSinkStats } from './sink';
export { lokiConfigSchema, type LokiSinkConfig } from './config';

/** The registry's factory. Without a logger the sink logs warnings to stderr like the agent's default logger. */
export function createLokiSink(config: LokiSinkConfig, opts: LokiSinkOptions = {}): Sink {
  return new LokiSink(config, { logger: opts.logger ?? createLogger('info') });
}
