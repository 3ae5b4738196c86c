import type { Sink } from '../sink';
import type { WebhookSinkConfig } from './config';
import { WebhookSink } from './sink';

export { WebhookSink, classifyWebhookStatus, parseRetryAfterMs } from './sink';
export { webhookConfigSchema, checkWebhookConfig, type WebhookSinkConfig } from './config';

export function createWebhookSink(config: WebhookSinkConfig): Sink {
  return new WebhookSink(config);
}
