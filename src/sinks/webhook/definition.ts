import type { SinkDefinition } from '../sink';
import { StartProblems } from '../secret';
import { checkWebhookConfig, webhookConfigSchema, type WebhookSinkConfig } from './config';

export const definition: SinkDefinition<WebhookSinkConfig> = {
  name: 'webhook',
  schema: webhookConfigSchema,
  check: checkWebhookConfig,
  preflight(config) {
    const start = new StartProblems('sinks.webhook');
    start.addAll(checkWebhookConfig(config));
    if (config.bearer_token_file) start.secret('bearer_token_file', config.bearer_token_file, true);
    return start.problems;
  },
  /**
   * A `bearer_token_file` that cannot be read is a configuration error (exit 78) at start rather than a retry
   * reason found at the first kill; the file is still read at each request, so a renewed token is used.
   */
  create(config) {
    const start = new StartProblems('sinks.webhook');
    start.addAll(checkWebhookConfig(config));
    // the key is sensitive: its value (the path) is not printed either
    if (config.bearer_token_file) start.secret('bearer_token_file', config.bearer_token_file, true);
    start.throwIfAny();
    /* eslint-disable-next-line @typescript-eslint/no-require-imports */
    const { WebhookSink } = require('./sink') as typeof import('./sink');
    return new WebhookSink(config);
  },
};
