import type { KeyProblem } from '../../config/errors';
import type { SinkDefinition } from '../sink';
import { StartProblems } from '../secret';
import { checkLokiConfig, lokiConfigSchema, type LokiSinkConfig } from './config';

/** The checks, the secret files and (for an https:// url) the TLS files parsed as PEM; paths are not printed. */
function startProblems(config: LokiSinkConfig): StartProblems {
  const start = new StartProblems('sinks.loki');
  start.addAll(checkLokiConfig(config));
  for (const key of ['basic_auth_password_file', 'bearer_token_file'] as const) {
    if (config[key]) start.secret(key, config[key], true);
  }
  if (config.url.startsWith('https:')) {
    if (config.tls.ca_file) start.file('tls.ca_file', config.tls.ca_file, true, 'ca');
    if (config.tls.cert_file && config.tls.key_file) start.certAndKey('tls.cert_file', config.tls.cert_file, 'tls.key_file', config.tls.key_file, true);
  }
  return start;
}

export const definition: SinkDefinition<LokiSinkConfig> = {
  name: 'loki',
  schema: lokiConfigSchema,
  check: checkLokiConfig,
  preflight: (config): KeyProblem[] => startProblems(config).problems,
  /**
   * A secret file the sink cannot read is a configuration error (exit 78) at start, not a crash systemd would
   * restart in a loop; the files are read again at each request, so a renewed token is used.
   */
  create(config, { logger }) {
    startProblems(config).throwIfAny();
    // protobufjs and snappy are loaded only for an enabled sink
    /* eslint-disable-next-line @typescript-eslint/no-require-imports */
    const { LokiSink } = require('./sink') as typeof import('./sink');
    return new LokiSink(config, { logger });
  },
};
