import fs from 'node:fs';
import { ConfigError, type ConfigProblem } from '../../config/load';
import { createLogger, type Logger } from '../../observe/logger';
import type { Sink } from '../sink';
import type { ClickHouseSinkConfig } from './config';
import { ClickHouseSink, readPasswordFile, type ClickHouseSinkOptions } from './sink';

export { ClickHouseSink } from './sink';
export type { ClickHouseSinkConfig } from './config';

export interface ClickHouseSinkDeps {
  /** Where the sink logs (schema migrations, errors only an operator can fix). Default: a stderr logger at info. */
  logger?: Logger;
  migrations?: ClickHouseSinkOptions['migrations'];
}

const KEY = 'sinks.clickhouse';

/**
 * Builds the ClickHouse sink from `sinks.clickhouse.*`. Reads `password_file` and the TLS files now, so a
 * missing or unreadable one stops the agent at start with a configuration error (exit 78) naming the key
 * and the file, never the password.
 */
export function createClickHouseSink(config: ClickHouseSinkConfig, deps: ClickHouseSinkDeps = {}): Sink {
  const problems: ConfigProblem[] = [];
  const problem = (key: string, message: string): void => {
    problems.push({ code: 'CONFIG_INVALID', key: `${KEY}.${key}`, message: `${KEY}.${key}: ${message}` });
  };
  const read = (key: string, file: string): Buffer | undefined => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      problem(key, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      return undefined;
    }
  };

  let password = config.password;
  if (config.password_file !== '') {
    if (config.password !== '') problem('password_file', 'set either password or password_file, not both');
    try {
      password = readPasswordFile(config.password_file);
    } catch (err) {
      problem('password_file', `cannot read ${config.password_file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }

  const https = config.url.startsWith('https:');
  const { ca_file, cert_file, key_file } = config.tls;
  let tls: ClickHouseSinkOptions['tls'];
  if ((ca_file || cert_file || key_file) && !https) problem('tls.ca_file', 'tls files need an https:// url');
  if ((cert_file === '') !== (key_file === '')) problem('tls.cert_file', 'cert_file and key_file go together');
  if (cert_file && !ca_file) problem('tls.ca_file', 'mutual TLS (cert_file) needs ca_file too');
  if (ca_file && https) {
    const ca = read('tls.ca_file', ca_file);
    const cert = cert_file ? read('tls.cert_file', cert_file) : undefined;
    const key = key_file ? read('tls.key_file', key_file) : undefined;
    if (ca) tls = cert && key ? { ca_cert: ca, cert, key } : { ca_cert: ca };
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const logger = deps.logger ?? createLogger('info', 'text');
  const opts: ClickHouseSinkOptions = { config, logger, password };
  if (tls) opts.tls = tls;
  if (deps.migrations) opts.migrations = deps.migrations;
  if (config.password_file !== '') {
    const file = config.password_file;
    opts.rereadPassword = () => {
      try {
        return readPasswordFile(file);
      } catch (err) {
        logger.warn(`clickhouse: cannot re-read password_file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { sink: 'clickhouse' });
        return undefined;
      }
    };
  }
  return new ClickHouseSink(opts);
}
