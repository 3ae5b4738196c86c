import { nonEmptyString } from '../../config/formats';
import type { ConfigSchema, SinkDefinition } from '../sink';
import { FileSink } from './sink';

export interface FileConfig {
  enabled: boolean;
  path: string;
}

export const schema: ConfigSchema<FileConfig> = {
  enabled: {
    doc: 'Append each record as one JSON line to sinks.file.path.',
    format: Boolean,
    default: true,
    env: 'OOMTRAIL_SINKS_FILE_ENABLED',
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
  create: (config) => new FileSink({ path: config.path }),
};
