import type { Sink } from '../sink';
import { silentLogger } from '../../observe/logger';
import type { KubernetesEventsSinkConfig } from './config';
import { definition } from './definition';

export { KubernetesEventsSink, TokenBucket } from './sink';
export { eventNote, eventBody, regardingOf, seriesPatch, microTime } from './encode';
export { classifyKubeStatus, forbiddenLine } from './classify';
export { kubernetesEventsConfigSchema, checkKubernetesEventsConfig, type KubernetesEventsSinkConfig } from './config';

/** Builds the kubernetes_events sink (definition.ts); throws ConfigError (exit 78) naming the key. */
export function createKubernetesEventsSink(config: KubernetesEventsSinkConfig): Sink {
  return definition.create(config, { logger: silentLogger() });
}
