import { natural } from '../../config/formats';
import type { ConfigSchema, SinkDefinition } from '../sink';
import { ConsoleSink } from './sink';

export interface ConsoleConfig {
  enabled: boolean;
  batch_max_age_ms: number;
  format: 'text' | 'json';
}

const FORMATS: Array<ConsoleConfig['format']> = ['text', 'json'];

export const schema: ConfigSchema<ConsoleConfig> = {
  enabled: {
    doc: 'Write each record to stdout.',
    format: Boolean,
    default: true,
    env: 'OOMTRAIL_SINKS_CONSOLE_ENABLED',
  },
  batch_max_age_ms: {
    doc: 'Batch age of this sink (milliseconds), instead of pipeline.batch.max_age_ms: a local write costs ~nothing, so by default (0) a record is written as soon as it is assembled; records of one burst still share a write.',
    format: natural,
    default: 0,
    env: 'OOMTRAIL_SINKS_CONSOLE_BATCH_MAX_AGE_MS',
  },
  format: {
    doc: 'Console record format: text (one readable line) or json (one JSON object per line).',
    format: [...FORMATS],
    default: 'text',
    env: 'OOMTRAIL_SINKS_CONSOLE_FORMAT',
  },
};

export const definition: SinkDefinition<ConsoleConfig> = {
  name: 'console',
  schema,
  check: () => [],
  create: (config) => new ConsoleSink({ format: config.format, batchMaxAgeMs: config.batch_max_age_ms }),
};
