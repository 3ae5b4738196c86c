import fs from 'node:fs';
import { ConfigError } from '../../config/load';
import type { Sink } from '../sink';
import { LokiConfigError, type LokiSinkConfig } from './config';
import { LokiSink, type LokiSinkOptions } from './sink';
import { createLogger } from '../../observe/logger';

export { LokiSink, type LokiSinkOptions, type LokiSinkStats } from './sink';
export { lokiConfigSchema, type LokiSinkConfig } from './config';

/**
 * The registry's factory. Without a logger the sink logs warnings to stderr like the agent's default logger.
 * A file the sink cannot read (TLS, password, token) is a configuration error (exit 78) at start, not a
 * crash systemd would restart in a loop; the secret files are read again at each request.
 */
export function createLokiSink(config: LokiSinkConfig, opts: LokiSinkOptions = {}): Sink {
  for (const key of ['basic_auth_password_file', 'bearer_token_file'] as const) {
    if (!config[key]) continue;
    try {
      fs.readFileSync(config[key]);
    } catch (err) {
      throw lokiConfigError(`sinks.loki.${key}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  try {
    return new LokiSink(config, { logger: opts.logger ?? createLogger('info') });
  } catch (err) {
    if (err instanceof LokiConfigError) throw lokiConfigError(err.message);
    throw err;
  }
}

function lokiConfigError(message: string): ConfigError {
  const key = /^(sinks\.loki(?:\.[a-z_]+)*)/.exec(message)?.[1] ?? 'sinks.loki';
  return new ConfigError([{ code: 'CONFIG_INVALID', key, message }]);
}
