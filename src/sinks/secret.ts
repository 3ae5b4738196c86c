import fs from 'node:fs';
import { ConfigError, type KeyProblem } from '../config/errors';

/**
 * Secret files (passwords, tokens) and the other files a sink reads at start (TLS material). One reader for every
 * sink: the content without one trailing newline (files written by `echo` or an editor), errors that name the
 * key and the errno, never the content.
 */

const stripNewline = (text: string): string => text.replace(/\r?\n$/, '');

/** A secret file's content without one trailing newline. Throws the fs error (its code), never the content. */
export function readSecretFile(file: string): string {
  return stripNewline(fs.readFileSync(file, 'utf8'));
}

/** The same, asynchronously: for sinks that read their secret at each request so that a renewed one is used. */
export async function readSecretFileAsync(file: string): Promise<string> {
  return stripNewline(await fs.promises.readFile(file, 'utf8'));
}

const errno = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? 'error';

/**
 * Collects a sink's configuration problems at start (the cross-key checks, then the files it must read), to throw
 * them as one ConfigError. Keys are given relative to the sink (`tls.ca_file`), messages name the full key.
 */
export class StartProblems {
  readonly problems: KeyProblem[] = [];
  constructor(private readonly prefix: string) {}

  add(key: string, message: string): void {
    this.problems.push({ key: `${this.prefix}.${key}`, message });
  }

  addAll(problems: readonly KeyProblem[]): void {
    this.problems.push(...problems);
  }

  /**
   * The file's bytes, or undefined with a problem recorded. `sensitive` keys do not print the path either (a
   * path can hold a token), as the loader does for their values.
   */
  file(key: string, file: string, sensitive = false): Buffer | undefined {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      this.unreadable(key, file, err, sensitive);
      return undefined;
    }
  }

  /** A secret file's text (readSecretFile), or undefined with a problem recorded. */
  secret(key: string, file: string, sensitive = false): string | undefined {
    try {
      return readSecretFile(file);
    } catch (err) {
      this.unreadable(key, file, err, sensitive);
      return undefined;
    }
  }

  /** Throws every problem found as one ConfigError (exit 78). */
  throwIfAny(): void {
    const err = ConfigError.of(this.problems);
    if (err) throw err;
  }

  private unreadable(key: string, file: string, err: unknown, sensitive: boolean): void {
    this.problems.push({
      key: `${this.prefix}.${key}`,
      code: 'CONFIG_UNREADABLE',
      message: sensitive ? `cannot read the file (${errno(err)})` : `cannot read ${file}: ${errno(err)}`,
    });
  }
}
