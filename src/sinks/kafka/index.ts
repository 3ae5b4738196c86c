import fs from 'node:fs';
import { ConfigError, type ConfigProblem } from '../../config/load';
import { createLogger, type Logger } from '../../observe/logger';
import type { Sink } from '../sink';
import { parseBrokers, type KafkaSinkConfig } from './config';
import { KafkaSink, type KafkaSinkOptions } from './sink';

export { KafkaSink, retrySettings } from './sink';
export { kafkaConfigSchema, type KafkaSinkConfig } from './config';
export { encodeMessage } from './encoder';
export { classifyKafkaError } from './errors';

export interface KafkaSinkDeps {
  /** Default: a stderr logger at info. */
  logger?: Logger;
}

const KEY = 'sinks.kafka';

/** The password file's content without one trailing newline. */
export function readPasswordFile(file: string): string {
  return fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
}

/**
 * Builds the Kafka sink from `sinks.kafka.*`. Checks the brokers and reads the SASL password file and the TLS
 * files now, so a bad one stops the agent at start with a configuration error (exit 78) naming the key (and the
 * file, never the password).
 */
export function createKafkaSink(config: KafkaSinkConfig, deps: KafkaSinkDeps = {}): KafkaSink & Sink {
  const problems: ConfigProblem[] = [];
  const problem = (key: string, message: string): void => {
    problems.push({ code: 'CONFIG_INVALID', key: `${KEY}.${key}`, message: `${KEY}.${key}: ${message}` });
  };
  let brokers: string[] = [];
  try {
    brokers = parseBrokers(config.brokers);
  } catch (err) {
    problem('brokers', (err as Error).message);
  }
  let password: string | undefined;
  if (config.sasl.mechanism !== 'none') {
    if (config.sasl.username.trim() === '') problem('sasl.username', `is required with sasl.mechanism ${config.sasl.mechanism}`);
    if (config.sasl.password_file === '') problem('sasl.password_file', `is required with sasl.mechanism ${config.sasl.mechanism}`);
    else {
      try {
        password = readPasswordFile(config.sasl.password_file);
      } catch (err) {
        problem('sasl.password_file', `cannot read ${config.sasl.password_file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      }
    }
  }
  const tls: NonNullable<KafkaSinkOptions['tls']> = {};
  const { ca_file, cert_file, key_file } = config.tls;
  if ((ca_file || cert_file || key_file) && !config.tls.enabled) problem('tls.enabled', 'tls files are set but tls.enabled is false');
  if ((cert_file === '') !== (key_file === '')) problem('tls.cert_file', 'cert_file and key_file go together');
  for (const [k, file] of [['ca', ca_file], ['cert', cert_file], ['key', key_file]] as const) {
    if (!file) continue;
    try {
      tls[k] = fs.readFileSync(file);
    } catch (err) {
      problem(`tls.${k}_file`, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const opts: KafkaSinkOptions = { config, logger: deps.logger ?? createLogger('info', 'text'), brokers };
  if (password !== undefined) opts.password = password;
  if (config.tls.enabled) opts.tls = tls;
  return new KafkaSink(opts);
}
