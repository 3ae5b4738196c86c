import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { ConfigError, type KeyProblem } from '../config/errors';
import { errnoOf, readRegularFile, readRegularFileAsync } from '../host/paths';

/**
 * Secret files (passwords, tokens) and the other files a sink reads at start (TLS material). One reader for every
 * sink: a regular file only (a FIFO or a device would block the read, or never end), size-bounded, the content
 * without one trailing newline (files written by `echo` or an editor), errors that name the key and the errno,
 * never the content.
 */

/** Bigger is not a password or a token: refused rather than read into memory at each request. */
export const SECRET_MAX_BYTES = 64 * 1024;
/** A CA bundle of a few hundred certificates fits. */
export const PEM_MAX_BYTES = 4 * 1024 * 1024;

const stripNewline = (text: string): string => text.replace(/\r?\n$/, '');

/** A secret file's content without one trailing newline. Throws the fs error (its code), never the content. */
export function readSecretFile(file: string): string {
  return stripNewline(readRegularFile(file, SECRET_MAX_BYTES).toString('utf8'));
}

/** The same, asynchronously: for sinks that read their secret at each request so that a renewed one is used. */
export async function readSecretFileAsync(file: string): Promise<string> {
  return stripNewline((await readRegularFileAsync(file, SECRET_MAX_BYTES)).toString('utf8'));
}

export type PemKind = 'ca' | 'cert' | 'key';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/**
 * Why `data` is not usable PEM of the kind, or null. Each certificate of a CA bundle must parse (one bad block
 * in a bundle fails every handshake that needs it, far from the cause); the messages quote nothing of the file.
 */
export function pemProblem(kind: PemKind, data: Buffer): string | null {
  const text = data.toString('latin1');
  if (kind === 'key') {
    if (!/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text)) return 'holds no PEM private key (-----BEGIN … PRIVATE KEY-----)';
    try {
      createPrivateKey(data);
      return null;
    } catch {
      return 'does not parse as a PEM private key (an encrypted key is not supported)';
    }
  }
  const certs = [...text.matchAll(PEM_BLOCK)].filter((m) => m[1] === 'CERTIFICATE');
  if (certs.length === 0) return 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)';
  for (let i = 0; i < certs.length; i++) {
    try {
      new X509Certificate(certs[i]![0]);
    } catch {
      return certs.length === 1 ? 'does not parse as a PEM certificate' : `certificate ${i + 1} of ${certs.length} does not parse`;
    }
  }
  return null;
}

/**
 * Collects a sink's configuration problems at start (the cross-key checks, then the files it must read), to throw
 * them as one ConfigError. Keys are given relative to the sink (`tls.ca_file`), messages name the full key.
 */
export class StartProblems {
  readonly problems: KeyProblem[] = [];
  constructor(private readonly prefix: string) {}

  add(key: string, message: string, related: string[] = []): void {
    this.problems.push({ key: `${this.prefix}.${key}`, message, ...(related.length ? { related: related.map((r) => `${this.prefix}.${r}`) } : {}) });
  }

  addAll(problems: readonly KeyProblem[]): void {
    this.problems.push(...problems);
  }

  /**
   * The file's bytes (a regular file, bounded), or undefined with a problem recorded. `sensitive` keys do not print
   * the path either (a path can hold a token), as the loader does for their values. With `pem`, the content must
   * parse as that kind of PEM.
   */
  file(key: string, file: string, sensitive = false, pem?: PemKind): Buffer | undefined {
    let data: Buffer;
    try {
      data = readRegularFile(file, pem ? PEM_MAX_BYTES : SECRET_MAX_BYTES);
    } catch (err) {
      this.unreadable(key, file, err, sensitive);
      return undefined;
    }
    const bad = pem ? pemProblem(pem, data) : null;
    if (bad) {
      this.problems.push({ key: `${this.prefix}.${key}`, message: sensitive ? `the file ${bad}` : `${file} ${bad}` });
      return undefined;
    }
    return data;
  }

  /** A certificate and its key: each must parse, and the key must be the certificate's. */
  certAndKey(certKey: string, certFile: string, keyKey: string, keyFile: string, sensitive = false): { cert?: Buffer; key?: Buffer } {
    const cert = this.file(certKey, certFile, sensitive, 'cert');
    const key = this.file(keyKey, keyFile, sensitive, 'key');
    if (cert && key) {
      let matches = false;
      try {
        const keyObject: KeyObject = createPrivateKey(key);
        matches = new X509Certificate(cert).checkPrivateKey(keyObject);
      } catch {
        /* reported as a mismatch */
      }
      if (!matches) this.add(keyKey, `is not the private key of ${this.prefix}.${certKey}`, [certKey]);
    }
    return { cert, key };
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
    const code = errnoOf(err);
    const why = code === 'ENOTREG' || code === 'EFBIG' || code === 'EISDIR' ? (err as Error).message : code;
    this.problems.push({
      key: `${this.prefix}.${key}`,
      code: 'CONFIG_UNREADABLE',
      message: sensitive ? `cannot read the file (${why})` : `cannot read ${file}: ${why}`,
    });
  }
}
