import { natural, nonEmptyString } from '../../config/formats';
import type { ConfigSchema, SinkDefinition } from '../sink';
import { FileSink } from './sink';

export interface FileConfig {
  enabled: boolean;
  batch_max_age_ms: number;
  path: string;
}

export const schema: ConfigSchema<FileConfig> = {
  enabled: {
    doc: 'Append each record as one JSON line to sinks.file.path.',
    format: Boolean,
    default: true,
    env: 'OOMTRAIL_SINKS_FILE_ENABLED',
  },
  batch_max_age_ms: {
    doc: 'Batch age of this sink (milliseconds), instead of pipeline.batch.max_age_ms: a local write costs ~nothing, so by default (0) a record is written as soon as it is assembled; records of one burst still share a write.',
    format: natural,
    default: 0,
    env: 'OOMTRAIL_SINKS_FILE_BATCH_MAX_AGE_MS',
  },
  path: {
    doc: 'JSON-lines file the file sink appends to.',
    format: nonEmptyString,
    default: '/var/lib/oomtrail/events.jsonl',
    env: 'OOMTRAIL_SINKS_FILE_PATH',
  },
};

export const definition: SinkDefinition<FileConfig> = {
  name: 'file',
  schema,
  check: () => [],
  create: (config) => new FileSink({ path: config.path, batchMaxAgeMs: config.batch_max_age_ms }),
};
