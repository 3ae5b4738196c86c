import { createLogger, type Logger } from '../../observe/logger';
import type { Sink } from '../sink';
import type { ClickHouseSinkConfig } from './config';
import { definition, type ClickHouseSinkDeps as Deps } from './definition';

export { ClickHouseSink } from './sink';
export type { ClickHouseSinkConfig } from './config';

/** `logger`: where the sink logs (schema migrations, errors only an operator can fix); default a stderr logger at info. */
export type ClickHouseSinkDeps = Partial<Pick<Deps, 'logger'>> & Omit<Deps, 'logger'>;

/** Builds the ClickHouse sink from `sinks.clickhouse.*` (definition.ts); throws ConfigError (exit 78) naming the key. */
export function createClickHouseSink(config: ClickHouseSinkConfig, deps: ClickHouseSinkDeps = {}): Sink {
  return definition.create(config, { ...deps, logger: deps.logger ?? createLogger('info', 'text') });
}
