import type { SinkDefinition } from '../sink';
import { StartProblems } from '../secret';
import { checkLokiConfig, lokiConfigSchema, type LokiSinkConfig } from './config';

export const definition: SinkDefinition<LokiSinkConfig> = {
  name: 'loki',
  schema: lokiConfigSchema,
  check: checkLokiConfig,
  /**
   * A secret file the sink cannot read is a configuration error (exit 78) at start, not a crash systemd would
   * restart in a loop; the files are read again at each request, so a renewed token is used.
   */
  create(config, { logger }) {
    const start = new StartProblems('sinks.loki');
    start.addAll(checkLokiConfig(config));
    for (const key of ['basic_auth_password_file', 'bearer_token_file'] as const) {
      if (config[key]) start.secret(key, config[key], true);
    }
    start.throwIfAny();
    // protobufjs and snappy are loaded only for an enabled sink
    /* eslint-disable-next-line @typescript-eslint/no-require-imports */
    const { LokiSink } = require('./sink') as typeof import('./sink');
    return new LokiSink(config, { logger });
  },
};
