import { natural } from '../config/formats';
import type { KeyProblem } from '../config/errors';
import type { Logger } from '../observe/logger';
import type { OomRecord } from '../record/record';

/** A record of a batch that the destination refused for good, with the destination's reason. */
export interface RejectedRecord {
  record: OomRecord;
  reason: string;
}

/**
 * Outcome of one `write`: the lane owns retries, spooling and dead letters; the sink only classifies.
 * `delivered` may name records the destination refused while it accepted the rest (a partial success, e.g. Loki's
 * 400 after writing the valid entries): the lane dead-letters exactly those and acks the whole batch. Sinks that
 * never return `rejectedRecords` are unaffected.
 */
export type WriteResult =
  | { status: 'delivered'; rejectedRecords?: readonly RejectedRecord[] }
  | { status: 'retryable'; reason: string; afterMs?: number }
  | { status: 'rejected'; reason: string };

export interface HealthStatus {
  healthy: boolean;
  detail?: string;
}

/** A destination for records. Implementations never throw from `write`; they answer a WriteResult. */
export interface Sink {
  readonly name: string;
  write(batch: readonly OomRecord[]): Promise<WriteResult>;
  flush(): Promise<void>;
  close(): Promise<void>;
  healthcheck(): Promise<HealthStatus>;
  /** Reopen local files before the next write (SIGHUP, after log rotation). Sinks without files leave it out. */
  reopen?(): void;
  /** This sink's batch age instead of `pipeline.batch.max_age_ms` (local sinks, whose writes cost ~nothing). */
  readonly batchMaxAgeMs?: number;
}

/** One key of a schema part, in the form convict takes (`format` throws a message without the value). */
export type ConfigKey<T> = {
  doc: string;
  format: BooleanConstructor | StringConstructor | string[] | ((x: unknown) => void);
  default: T;
  /** `OOMTRAIL_` + the key path upper-cased, `.` → `_` (config.test.ts holds the rule). */
  env: string;
  /** The loader never prints the value. */
  sensitive?: boolean;
};

/** `sinks.<name>.batch_max_age_ms` of a local sink (file, console), whose writes cost ~nothing: 0 by default. */
export function localBatchAgeKey(env: string): ConfigKey<number> {
  return {
    doc: 'Batch age of this sink (milliseconds), instead of pipeline.batch.max_age_ms: a local write costs ~nothing, so by default (0) a record is written as soon as it is assembled; records of one burst still share a write.',
    format: natural,
    default: 0,
    env,
  };
}

/** A sink's part of the configuration schema (`sinks.<name>.*`); declared here so a sink needs no convict import. */
export type ConfigSchema<C> = { [K in keyof C]: C[K] extends string | number | boolean ? ConfigKey<C[K]> : ConfigSchema<C[K]> };

export interface SinkDeps {
  logger: Logger;
}

/**
 * What every sink folder exports (its `definition.ts`), and all the registry needs: adding a sink is one folder and
 * one line in registry.ts. The definition module stays light (schema and checks only); `create` loads the sink's
 * client library when the sink is enabled.
 */
export interface SinkDefinition<C extends { enabled: boolean } = { enabled: boolean }> {
  /** The key under `sinks.` and the sink's name in metrics and logs. */
  readonly name: string;
  /** `sinks.<name>.*`, assembled into the configuration schema by config/schema.ts. */
  readonly schema: ConfigSchema<C>;
  /**
   * Checks across keys, without I/O: run by the loader for an enabled sink, so a mistake exits 78 naming the key
   * and where it was set. Messages never hold a secret.
   */
  check(config: C): KeyProblem[];
  /**
   * `check` and the files `create` would read (secrets: bounded regular files; TLS: parsed as PEM), the paths it
   * would write: run before the BPF programs attach, and by `oomtrail check`. Loads no client library, connects to
   * nothing, changes nothing on disk.
   */
  preflight(config: C): KeyProblem[];
  /** Builds the sink: check, then the files it needs read now; throws ConfigError naming the key. */
  create(config: C, deps: SinkDeps): Sink;
}
