import { localBatchAgeKey, type ConfigSchema, type SinkDefinition } from '../sink';
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
  batch_max_age_ms: localBatchAgeKey('OOMTRAIL_SINKS_CONSOLE_BATCH_MAX_AGE_MS'),
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
  preflight: () => [],
  create: (config) => new ConsoleSink({ format: config.format, batchMaxAgeMs: config.batch_max_age_ms }),
};
