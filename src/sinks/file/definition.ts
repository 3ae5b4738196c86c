import { nonEmptyString } from '../../config/formats';
import { localBatchAgeKey, type ConfigSchema, type SinkDefinition } from '../sink';
import { FileSink } from './sink';
import { unusablePath } from '../../host/paths';

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
  batch_max_age_ms: localBatchAgeKey('OOMTRAIL_SINKS_FILE_BATCH_MAX_AGE_MS'),
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
  // a directory, a read-only mount or a file in the way would fail every write (and retry for ever)
  preflight: (config) => {
    const why = unusablePath(config.path, 'file');
    return why ? [{ key: 'sinks.file.path', message: `${config.path} ${why}` }] : [];
  },
  create: (config) => new FileSink({ path: config.path, batchMaxAgeMs: config.batch_max_age_ms }),
};
