import type { Sink } from '../sink';
import { silentLogger } from '../../observe/logger';
import type { WebhookSinkConfig } from './config';
import { definition } from './definition';

export { WebhookSink, classifyWebhookStatus, parseRetryAfterMs } from './sink';
export { webhookConfigSchema, checkWebhookConfig, type WebhookSinkConfig } from './config';

/** Builds the webhook sink (definition.ts); throws ConfigError (exit 78) naming the key. */
export function createWebhookSink(config: WebhookSinkConfig): Sink {
  return definition.create(config, { logger: silentLogger() });
}
