import type { Logger } from '../observe/logger';
import type { Sink, SinkDefinition } from './sink';
import { definition as console } from './console/definition';
import { definition as file } from './file/definition';
import { definition as clickhouse } from './clickhouse/definition';
import { definition as kafka } from './kafka/definition';
import { definition as loki } from './loki/definition';
import { definition as webhook } from './webhook/definition';
import { definition as kubernetes_events } from './kubernetes_events/definition';

/**
 * Every sink, in the order records are routed to them. Adding a sink = one folder under src/sinks/ whose
 * `definition.ts` exports a SinkDefinition, and one line here: its schema part, checks and factory follow.
 * The definitions are light; a network sink's client library is required by its `create` only.
 */
export const SINKS = { console, file, clickhouse, kafka, loki, webhook, kubernetes_events } as const;

type ConfigOf<D> = D extends SinkDefinition<infer C> ? C : never;

/** `sinks.*` of the configuration, one part per registered sink. */
export type SinksConfig = { [N in keyof typeof SINKS]: ConfigOf<(typeof SINKS)[N]> };

export type SinkName = keyof typeof SINKS;

const entries = (): Array<[SinkName, SinkDefinition]> => Object.entries(SINKS) as Array<[SinkName, SinkDefinition]>;

/** The enabled sinks' definitions with their configuration. */
export function enabledSinks(sinks: SinksConfig): Array<{ definition: SinkDefinition; config: { enabled: boolean } }> {
  return entries()
    .map(([name, definition]) => ({ definition, config: sinks[name] as { enabled: boolean } }))
    .filter(({ config }) => config.enabled);
}

/** Builds every enabled sink; throws ConfigError (exit 78) naming the key of the first bad one. */
export function createSinks(config: { sinks: SinksConfig }, logger: Logger): Sink[] {
  return enabledSinks(config.sinks).map(({ definition, config: c }) => definition.create(c, { logger }));
}
