import type convict from 'convict';

/** `sinks.clickhouse.*` (the ClickHouse sink issue fills this in). */
export interface ClickHouseSinkConfig {
  enabled: boolean;
}

export const clickhouseConfigSchema: convict.Schema<ClickHouseSinkConfig> = {
  enabled: {
    doc: 'Send records to ClickHouse.',
    format: Boolean,
    default: false,
    env: 'OOMTRAIL_SINKS_CLICKHOUSE_ENABLED',
  },
};
