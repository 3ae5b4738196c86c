import type { KeyProblem } from '../../config/errors';
import type { SinkDefinition, SinkDeps } from '../sink';
import { readSecretFile, StartProblems } from '../secret';
import { clickhouseConfigSchema, type ClickHouseSinkConfig } from './config';
import type { ClickHouseSinkOptions } from './sink';

const KEY = 'sinks.clickhouse';

export interface ClickHouseSinkDeps extends SinkDeps {
  migrations?: ClickHouseSinkOptions['migrations'];
}

function check(config: ClickHouseSinkConfig): KeyProblem[] {
  const p = new StartProblems(KEY);
  const problem = p.add.bind(p);
  if (config.password_file !== '' && config.password !== '') problem('password_file', 'set either password or password_file, not both', ['password']);
  const { ca_file, cert_file, key_file } = config.tls;
  if ((ca_file || cert_file || key_file) && !config.url.startsWith('https:')) problem('tls.ca_file', 'tls files need an https:// url', ['url', 'tls.cert_file', 'tls.key_file']);
  if ((cert_file === '') !== (key_file === '')) problem('tls.cert_file', 'cert_file and key_file go together', ['tls.key_file']);
  if (cert_file && !ca_file) problem('tls.ca_file', 'mutual TLS (cert_file) needs ca_file too', ['tls.cert_file']);
  return p.problems;
}

/**
 * Reads `password_file` and the TLS files now, so a missing or unreadable one stops the agent at start with a
 * configuration error (exit 78) naming the key and the file, never the password.
 */
function readFiles(config: ClickHouseSinkConfig, start: StartProblems): { password: string | undefined; tls: ClickHouseSinkOptions['tls'] } {
  const password = config.password_file !== '' ? start.secret('password_file', config.password_file) : config.password;
  const { ca_file, cert_file, key_file } = config.tls;
  let tls: ClickHouseSinkOptions['tls'];
  if (ca_file && config.url.startsWith('https:')) {
    const ca = start.file('tls.ca_file', ca_file, false, 'ca');
    const { cert, key } = cert_file && key_file ? start.certAndKey('tls.cert_file', cert_file, 'tls.key_file', key_file) : {};
    if (ca) tls = cert && key ? { ca_cert: ca, cert, key } : { ca_cert: ca };
  }
  return { password, tls };
}

/** The checks and the files, for the pre-flight: no client library loaded, nothing connected. */
function preflight(config: ClickHouseSinkConfig): KeyProblem[] {
  const start = new StartProblems(KEY);
  start.addAll(check(config));
  readFiles(config, start);
  return start.problems;
}

function create(config: ClickHouseSinkConfig, deps: ClickHouseSinkDeps) {
  const start = new StartProblems(KEY);
  start.addAll(check(config));
  const { password, tls } = readFiles(config, start);
  start.throwIfAny();

  const logger = deps.logger;
  const opts: ClickHouseSinkOptions = { config, logger, password: password ?? '' };
  if (tls) opts.tls = tls;
  if (deps.migrations) opts.migrations = deps.migrations;
  if (config.password_file !== '') {
    const file = config.password_file;
    opts.rereadPassword = () => {
      try {
        return readSecretFile(file);
      } catch (err) {
        logger.warn(`clickhouse: cannot re-read password_file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { sink: 'clickhouse' });
        return undefined;
      }
    };
  }
  // @clickhouse/client is loaded only for an enabled sink (~10-20 MB of heap and code)
  /* eslint-disable-next-line @typescript-eslint/no-require-imports */
  const { ClickHouseSink } = require('./sink') as typeof import('./sink');
  return new ClickHouseSink(opts);
}

export const definition: SinkDefinition<ClickHouseSinkConfig> = { name: 'clickhouse', schema: clickhouseConfigSchema, check, preflight, create };
