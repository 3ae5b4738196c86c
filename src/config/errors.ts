/**
 * The one configuration error, in a module that imports nothing: every sink, the loader and the CLI use it, and
 * a sink that throws it pulls in neither convict nor yaml. `cli/main.ts` maps it to exit 78 (EX_CONFIG).
 */

export type ConfigErrorCode =
  | 'CONFIG_UNKNOWN_KEY'
  | 'CONFIG_INVALID'
  | 'CONFIG_UNREADABLE'
  | 'CONFIG_PARSE'
  | 'CONFIG_AMBIGUOUS';

export interface ConfigProblem {
  code: ConfigErrorCode;
  /** Dotted key path, when the problem is about one key. */
  key?: string;
  /** The file the offending value (or the failure) came from. */
  file?: string;
  /** The environment variable the offending value came from. */
  env?: string;
  /** One line naming the source and the key; never a sensitive value. */
  message: string;
  /** Other keys the problem depends on (see KeyProblem). */
  related?: string[];
}

/** A problem found by a sink's own checks: the full dotted key and a reason that never holds a secret. */
export interface KeyProblem {
  key: string;
  message: string;
  code?: ConfigErrorCode;
  /** Other keys whose values the problem depends on (`pipeline.retry.initial_ms` for `max_ms`): their sources are named too. */
  related?: string[];
}

/** Any configuration failure. Not retriable: the process should exit with EX_CONFIG (78). */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code: ConfigErrorCode;
  readonly retriable = false as const;
  readonly exitCode = 78 as const;
  readonly key?: string;
  readonly file?: string;
  readonly env?: string;
  /** Every problem found; the fields above are those of the first. */
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    const first = problems[0];
    if (!first) throw new TypeError('ConfigError needs at least one problem');
    super(
      problems.length === 1
        ? first.message
        : // one line: systemd and log shippers show each line as its own entry
          `${problems.length} configuration problems: ${problems.map((p) => p.message).join('; ')}`,
    );
    this.code = first.code;
    if (first.key !== undefined) this.key = first.key;
    if (first.file !== undefined) this.file = first.file;
    if (first.env !== undefined) this.env = first.env;
    this.problems = Object.freeze([...problems]);
  }

  /** `key: message` for each problem; throws nothing when `problems` is empty (returns undefined). */
  static of(problems: readonly KeyProblem[]): ConfigError | undefined {
    if (problems.length === 0) return undefined;
    return new ConfigError(
      problems.map((p) => ({ code: p.code ?? 'CONFIG_INVALID', key: p.key, message: `${p.key}: ${p.message}`, ...(p.related ? { related: p.related } : {}) })),
    );
  }
}
