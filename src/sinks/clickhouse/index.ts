import type { Sink } from '../sink';
import type { ClickHouseSinkConfig } from './config';

export function createClickHouseSink(config: ClickHouseSinkConfig): Sink {
  throw new Error(`the ClickHouse sink is not implemented yet (sinks.clickhouse.enabled=${config.enabled})`);
}
