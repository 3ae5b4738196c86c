/**
 * ClickHouse failure → what the lane should do with the batch.
 *
 * | class      | examples                                                              | WriteResult                          |
 * |------------|-----------------------------------------------------------------------|--------------------------------------|
 * | transient  | ECONNREFUSED/ECONNRESET/timeouts, HTTP 5xx without a known code,      | retryable (lane backoff)             |
 * |            | 319 UNKNOWN_STATUS_OF_INSERT, 210 NETWORK_ERROR, 999 KEEPER_EXCEPTION  |                                      |
 * | overload   | HTTP 429/503, 202 TOO_MANY_SIMULTANEOUS_QUERIES, 252 TOO_MANY_PARTS,   | retryable, afterMs = Retry-After or  |
 * |            | 241 MEMORY_LIMIT_EXCEEDED, 201 QUOTA_EXCEEDED, 243 NOT_ENOUGH_SPACE    | a per-code floor                     |
 * | operator   | auth (516/192/193/194/195, HTTP 401/407), permissions (497/291/164,   | retryable, afterMs =                 |
 * |            | HTTP 403), 60/81 unknown table/database, 115 unknown setting,          | config_error_retry_ms, logged as an  |
 * |            | 50 UNKNOWN_TYPE (schema DDL on an old server), TLS certificate errors  | error: records stay spooled          |
 * | data       | 25/26/27/6/38/41/53/62/69/70/72/117/131/349… parse and type errors,    | rejected, with the server's message  |
 * |            | other HTTP 4xx (400, 413, …)                                          | (dead-lettered by the lane)          |
 *
 * The code comes from the `X-ClickHouse-Exception-Code` header, else from the body: current servers write
 * `Code: 60. DB::Exception: … (UNKNOWN_TABLE) (version …)`, 18.16 writes `Code: 60, e.displayText() =
 * DB::Exception: …, e.what() = DB::Exception` (which @clickhouse/client's parser does not match), and both are
 * read here. With no code, message text decides (auth phrases, "doesn't exist", "Cannot parse", …), then the
 * HTTP status.
 */

export type FailureClass = 'transient' | 'overload' | 'operator' | 'data';

export interface Classified {
  class: FailureClass;
  /** ClickHouse error code, when known. */
  code?: number;
  /** One line for logs and dead letters: `HTTP 404, code 60 (UNKNOWN_TABLE): Table x doesn't exist`. */
  reason: string;
  /** Server-requested delay (Retry-After), ms. */
  retryAfterMs?: number;
  /** The 1-based row of the insert the server stopped at (`(at row N)` in parse errors), when it says. */
  row?: number;
}

/**
 * Authentication failures, the one list (ClickHouse's ErrorCodes.cpp): 192 UNKNOWN_USER, 193 WRONG_PASSWORD,
 * 194 REQUIRED_PASSWORD, 516 AUTHENTICATION_FAILED are the credentials (a renewed password_file can fix them);
 * 195 IP_ADDRESS_NOT_ALLOWED is the host the user connects from (no password helps). All are the operator's.
 */
export const CREDENTIAL_CODES: ReadonlySet<number> = new Set([192, 193, 194, 516]);
export const HOST_DENIED_CODES: ReadonlySet<number> = new Set([195]);
const AUTH: ReadonlySet<number> = new Set([...CREDENTIAL_CODES, ...HOST_DENIED_CODES]);
const CREDENTIAL_TEXT = /authentication failed|wrong password|password is incorrect|required password|unknown user|there is no user/i;
const HOST_DENIED_TEXT = /not allowed to connect|IP_ADDRESS_NOT_ALLOWED/i;

/**
 * Which kind of authentication failure `c` is, by its code, else (no code: an old server or a proxy) by its text;
 * undefined when it is none.
 */
export function authFailure(c: Pick<Classified, 'code' | 'reason'>): 'credentials' | 'host' | undefined {
  if (c.code !== undefined && AUTH.has(c.code)) return CREDENTIAL_CODES.has(c.code) ? 'credentials' : 'host';
  if (c.code !== undefined) return undefined;
  if (HOST_DENIED_TEXT.test(c.reason)) return 'host';
  // a proxy's 401 "Unauthorized" or a codeless password message: worth re-reading password_file
  if (CREDENTIAL_TEXT.test(c.reason) || /auth|password/i.test(c.reason)) return 'credentials';
  return undefined;
}
const PERMISSION = new Set([497, 291, 164]);
const MISSING = new Set([60, 81]);
/** Table shape or server capability: the records are fine, the server is not ready for them. */
const SERVER_SHAPE = new Set([115, 50, 16, 8, 10, 20, 47, 73]);
const OVERLOAD_FLOOR_MS: Record<number, number> = { 202: 1000, 203: 1000, 252: 10_000, 241: 5000, 201: 60_000, 243: 60_000, 242: 5000 };
const TRANSIENT = new Set([159, 160, 209, 210, 236, 279, 285, 286, 319, 394, 425, 439, 999, 1000, 3, 32, 33, 23, 24, 49]);
const DATA = new Set([6, 19, 25, 26, 27, 28, 36, 38, 41, 43, 44, 53, 62, 69, 70, 72, 117, 122, 131, 349]);

export const CODE_NAMES: Readonly<Record<number, string>> = {
  3: 'UNEXPECTED_END_OF_FILE', 6: 'CANNOT_PARSE_TEXT', 8: 'THERE_IS_NO_COLUMN', 10: 'NOT_FOUND_COLUMN_IN_BLOCK',
  16: 'NO_SUCH_COLUMN_IN_TABLE', 19: 'SIZE_OF_FIXED_STRING_DOESNT_MATCH', 20: 'NUMBER_OF_COLUMNS_DOESNT_MATCH',
  25: 'CANNOT_PARSE_ESCAPE_SEQUENCE', 26: 'CANNOT_PARSE_QUOTED_STRING', 27: 'CANNOT_PARSE_INPUT_ASSERTION_FAILED',
  32: 'ATTEMPT_TO_READ_AFTER_EOF', 33: 'CANNOT_READ_ALL_DATA', 36: 'BAD_ARGUMENTS', 38: 'CANNOT_PARSE_DATE',
  41: 'CANNOT_PARSE_DATETIME', 47: 'UNKNOWN_IDENTIFIER', 50: 'UNKNOWN_TYPE', 53: 'TYPE_MISMATCH', 60: 'UNKNOWN_TABLE',
  62: 'SYNTAX_ERROR', 69: 'ARGUMENT_OUT_OF_BOUND', 70: 'CANNOT_CONVERT_TYPE', 72: 'CANNOT_PARSE_NUMBER',
  81: 'UNKNOWN_DATABASE', 115: 'UNKNOWN_SETTING', 117: 'INCORRECT_DATA', 131: 'TOO_LARGE_STRING_SIZE',
  159: 'TIMEOUT_EXCEEDED', 164: 'READONLY', 192: 'UNKNOWN_USER', 193: 'WRONG_PASSWORD', 194: 'REQUIRED_PASSWORD',
  195: 'IP_ADDRESS_NOT_ALLOWED', 201: 'QUOTA_EXCEEDED', 202: 'TOO_MANY_SIMULTANEOUS_QUERIES', 209: 'SOCKET_TIMEOUT',
  210: 'NETWORK_ERROR', 241: 'MEMORY_LIMIT_EXCEEDED', 242: 'TABLE_IS_READ_ONLY', 243: 'NOT_ENOUGH_SPACE',
  252: 'TOO_MANY_PARTS', 291: 'DATABASE_ACCESS_DENIED', 319: 'UNKNOWN_STATUS_OF_INSERT', 349: 'CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN',
  394: 'QUERY_WAS_CANCELLED', 425: 'SYSTEM_ERROR', 497: 'ACCESS_DENIED', 516: 'AUTHENTICATION_FAILED', 999: 'KEEPER_EXCEPTION',
};

/** The ClickHouse error code in a response body, current or 18.16 style; undefined when there is none. */
export function parseCode(text: string): number | undefined {
  const m = /\bCode: (\d+)[.,]/.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * The human part of an error body: `DB::Exception: <this>`, without the `(TYPE) (version …)` (current) or
 * `, e.what() = DB::Exception` (18.16) tails; the body itself (trimmed, one line) when it is not ClickHouse's.
 */
export function serverMessage(text: string): string {
  let msg = text.trim();
  const at = msg.lastIndexOf('DB::Exception: ');
  if (at >= 0) msg = msg.slice(at + 'DB::Exception: '.length);
  msg = msg
    .replace(/, e\.what\(\) = DB::Exception\s*$/s, '')
    .replace(/\s*\(version [^)]*\)\s*$/, '')
    .replace(/\s*\([A-Z][A-Z0-9_]{2,}\)\s*$/, '')
    .replace(/\s+/g, ' ')
    .trim();
  return msg.length > 500 ? msg.slice(0, 497) + '...' : msg;
}

/** Retry-After as seconds or an HTTP date → ms; undefined when absent or unreadable. */
export function parseRetryAfter(v: string | string[] | undefined, now = Date.now()): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  if (!s) return undefined;
  if (/^\s*\d+(\.\d+)?\s*$/.test(s)) return Math.round(Number(s) * 1000);
  const t = Date.parse(s);
  return Number.isFinite(t) ? Math.max(0, t - now) : undefined;
}

const PERMISSION_TEXT = /not enough privileges|access denied|ACCESS_DENIED|readonly mode|Cannot execute query in readonly/i;
const MISSING_TEXT = /(table|database) \S+ (doesn't|does not) exist|unknown table|unknown database/i;
const DATA_TEXT = /cannot parse|cannot read|type mismatch|incorrect data|syntax error|escape sequence|too large string|cannot convert/i;

/** An HTTP answer that was not a success (status ≥ 300, or an exception header on a 200). */
export function classifyResponse(status: number, body: string, headers: Record<string, string | string[] | undefined> = {}): Classified {
  const headerCode = Number(Array.isArray(headers['x-clickhouse-exception-code']) ? headers['x-clickhouse-exception-code'][0] : headers['x-clickhouse-exception-code']);
  const code = Number.isInteger(headerCode) && headerCode > 0 ? headerCode : parseCode(body);
  const msg = serverMessage(body) || '(empty body)';
  const retryAfterMs = parseRetryAfter(headers['retry-after']);
  const rowMatch = /\(at row (\d+)\)/.exec(body);
  const row = rowMatch ? Number(rowMatch[1]) : undefined;
  const name = code !== undefined ? CODE_NAMES[code] : undefined;
  const reason = `HTTP ${status}${code !== undefined ? `, code ${code}${name ? ` (${name})` : ''}` : ''}: ${msg}`;
  const out = (c: FailureClass, extra: Partial<Classified> = {}): Classified => {
    const r: Classified = { class: c, reason, ...extra };
    if (code !== undefined) r.code = code;
    if (row !== undefined) r.row = row;
    if (retryAfterMs !== undefined && r.retryAfterMs === undefined) r.retryAfterMs = retryAfterMs;
    return r;
  };

  // the status a proxy or load balancer answers with says more than any code in its body
  if (status === 429 || status === 503) return out('overload', { retryAfterMs: retryAfterMs ?? (code !== undefined ? OVERLOAD_FLOOR_MS[code] : undefined) ?? 1000 });
  if (code !== undefined) {
    if (AUTH.has(code) || PERMISSION.has(code) || MISSING.has(code) || SERVER_SHAPE.has(code)) return out('operator');
    if (code in OVERLOAD_FLOOR_MS) return out('overload', { retryAfterMs: retryAfterMs ?? OVERLOAD_FLOOR_MS[code] });
    if (TRANSIENT.has(code)) return out('transient');
    if (DATA.has(code)) return out('data');
  }
  // no code, or one not in the tables: the message, then the status
  if (CREDENTIAL_TEXT.test(body) || HOST_DENIED_TEXT.test(body) || PERMISSION_TEXT.test(body) || MISSING_TEXT.test(body)) return out('operator');
  if (status === 401 || status === 403 || status === 407 || status === 404) return out('operator');
  if (status === 408 || status >= 500 || status < 400) return out('transient');
  if (DATA_TEXT.test(body)) return out('data');
  return out('data'); // any other 4xx: the request itself is refused and would be refused again
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  'ECONNABORTED', 'EADDRNOTAVAIL', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE', 'HPE_INVALID_CONSTANT',
]);
const TLS_CODES = /^(CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|ERR_TLS_CERT_ALTNAME_INVALID|ERR_SSL_|EPROTO$)/;

/** A thrown error: network and timeout failures, TLS failures, or a ClickHouse error the client parsed. */
export function classifyThrown(err: unknown): Classified {
  const e = err as { code?: unknown; message?: unknown; type?: unknown };
  const message = String(e?.message ?? err);
  const sysCode = typeof e?.code === 'string' && !/^\d+$/.test(e.code) ? e.code : undefined;
  if (sysCode && TLS_CODES.test(sysCode)) return { class: 'operator', reason: `TLS: ${sysCode}: ${message}` };
  if (sysCode && NETWORK_CODES.has(sysCode)) return { class: 'transient', reason: `network: ${sysCode}: ${message}` };
  // @clickhouse/client's ClickHouseError: numeric code as a string, message without the prefix
  if (typeof e?.code === 'string' && /^\d+$/.test(e.code)) {
    const body = `Code: ${e.code}. DB::Exception: ${message}${typeof e.type === 'string' ? ` (${e.type})` : ''}`;
    return classifyResponse(500, body);
  }
  if (parseCode(message) !== undefined) return classifyResponse(500, message);
  if (/timeout/i.test(message)) return { class: 'transient', reason: `timeout: ${message}` };
  if (/socket hang up|aborted|closed|reset|ECONN|EPIPE/i.test(message)) return { class: 'transient', reason: `network: ${message}` };
  // unknown local failure: retry (never lose records on a guess)
  return { class: 'transient', reason: `${sysCode ? sysCode + ': ' : ''}${message}` };
}
