import type { Sink } from '../sink';
import type { LokiSinkConfig } from './config';

export function createLokiSink(config: LokiSinkConfig): Sink {
  throw new Error(`the Loki sink is not implemented yet (sinks.loki.enabled=${config.enabled})`);
}
