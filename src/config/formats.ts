/**
 * Convict format functions shared by the schema and every sink's schema part. No imports: a sink's config module
 * uses them without pulling in the loader. Each throws a message that never contains the value (the loader adds
 * it when the key is not sensitive).
 */

/** Integer ≥ 0 that survives a round trip through a double (convict's `nat` accepts 1e300). */
export function natural(x: unknown): void {
  if (!(typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) throw new Error('must be an integer >= 0');
}

/** Integer > 0: sizes, counts and timeouts where 0 would mean "never" or "hold nothing". */
export function positive(x: unknown): void {
  if (!(typeof x === 'number' && Number.isSafeInteger(x) && x > 0)) throw new Error('must be an integer > 0');
}

/** A BPF ring buffer's size: a power of two of whole pages (4096 to 1 GiB). */
export function ringBytes(x: unknown): void {
  if (!(typeof x === 'number' && Number.isSafeInteger(x) && x >= 4096 && x <= 1 << 30 && (x & (x - 1)) === 0)) {
    throw new Error('must be a power of two from 4096 to 1073741824');
  }
}

const CONTROL = /[\u0000-\u001f\u007f]/;

/** A string ('' allowed) without control characters: file paths, user names, tenants. */
/** '' (the default location) or an absolute path. */
export function emptyOrAbsolutePath(x: unknown): void {
  if (typeof x !== 'string' || (x !== '' && !x.startsWith('/'))) throw new Error("must be '' or an absolute path");
}

export function noControl(x: unknown): void {
  if (typeof x !== 'string') throw new Error('must be a string');
  if (CONTROL.test(x)) throw new Error('must not contain control characters');
}

export function nonEmptyString(x: unknown): void {
  if (typeof x !== 'string' || x.trim() === '') throw new Error('must be a non-empty string');
  if (CONTROL.test(x)) throw new Error('must not contain control characters');
}

/** The check carries its `values`, so the generated reference (docs/config.md) can list them. */
export function oneOf<T extends string>(values: readonly T[]): ((x: unknown) => void) & { values: readonly T[] } {
  const check = (x: unknown): void => {
    if (typeof x !== 'string' || !(values as readonly string[]).includes(x)) throw new Error(`must be one of ${values.join(', ')}`);
  };
  return Object.assign(check, { values });
}

export interface HttpUrlRules {
  /** Where credentials go instead of the URL's userinfo (named in the message). */
  credentials: string;
  /** Shown as an example of a good value. */
  example?: string;
  /** '' is accepted (a required-when-enabled check is the sink's). */
  allowEmpty?: boolean;
  /** A query string or fragment is refused. */
  noQuery?: boolean;
}

/** An absolute http(s) URL without userinfo (credentials in a URL end up in logs and process listings). */
export function httpUrl(rules: HttpUrlRules): (x: unknown) => void {
  return (x) => {
    if (typeof x !== 'string') throw new Error('must be a string');
    if (x === '' && rules.allowEmpty) return;
    let u: URL;
    try {
      u = new URL(x);
    } catch {
      throw new Error(`must be an absolute http:// or https:// URL${rules.example ? ` such as ${rules.example}` : ''}`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('must be an http:// or https:// URL');
    if (u.username || u.password) throw new Error(`must not carry credentials: use ${rules.credentials}`);
    if (rules.noQuery && (u.search || u.hash)) throw new Error('must not carry a query string or a fragment');
  };
}

/**
 * `scheme://host[:port]`, plus `/…` when the URL has more (path, query, fragment): never its userinfo, nor a
 * path that may be a token (Slack/Teams-style webhook URLs). Text that is not a URL prints as `…`.
 */
export function redactUrl(text: string): string {
  try {
    const u = new URL(text);
    if (!u.host) return '…';
    const more = (u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.hash !== '';
    return `${u.protocol}//${u.host}${more ? '/…' : ''}`;
  } catch {
    return '…';
  }
}
