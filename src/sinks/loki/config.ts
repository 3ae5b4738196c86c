import type convict from 'convict';

/** `sinks.loki.*` (the Loki sink issue fills this in). */
export interface LokiSinkConfig {
  enabled: boolean;
}

export const lokiConfigSchema: convict.Schema<LokiSinkConfig> = {
  enabled: {
    doc: 'Send records to Loki.',
    format: Boolean,
    default: false,
    env: 'OOMTRAIL_SINKS_LOKI_ENABLED',
  },
};
