import fs from 'node:fs';
import { ConfigError } from '../../config/load';
import type { Sink } from '../sink';
import type { WebhookSinkConfig } from './config';
import { WebhookSink } from './sink';

export { WebhookSink, classifyWebhookStatus, parseRetryAfterMs } from './sink';
export { webhookConfigSchema, checkWebhookConfig, type WebhookSinkConfig } from './config';

/**
 * A `bearer_token_file` that cannot be read is a configuration error (exit 78) at start rather than a
 * retry reason found at the first kill; the file is still read at each request, so a renewed token is used.
 */
export function createWebhookSink(config: WebhookSinkConfig): Sink {
  if (config.bearer_token_file) {
    try {
      fs.readFileSync(config.bearer_token_file);
    } catch (err) {
      const key = 'sinks.webhook.bearer_token_file';
      // the key is sensitive: its value (the path) is not printed either
      throw new ConfigError([{ code: 'CONFIG_UNREADABLE', key, message: `${key}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})` }]);
    }
  }
  return new WebhookSink(config);
}
