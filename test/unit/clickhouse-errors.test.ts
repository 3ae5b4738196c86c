import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  authFailure,
  classifyResponse,
  classifyThrown,
  parseCode,
  parseRetryAfter,
  serverMessage,
  type FailureClass,
} from '../../src/sinks/clickhouse/errors';

// bodies as the servers wrote them (18.16.1 from Debian, 26.9.2.1 through chdb), captured on this machine
const OLD = {
  wrongPassword: 'Code: 193, e.displayText() = DB::Exception: Wrong password for user default, e.what() = DB::Exception\n',
  unknownTable: "Code: 60, e.displayText() = DB::Exception: Table default.nope doesn't exist., e.what() = DB::Exception\n",
  parse: 'Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected " before: x"}: (while read the value of key a): (at row 1)\n, e.what() = DB::Exception\n',
  unknownSetting: 'Code: 115, e.displayText() = DB::Exception: Unknown setting insert_deduplication_token, e.what() = DB::Exception\n',
  surrogate: 'Code: 25, e.displayText() = DB::Exception: Cannot parse escape sequence: missing second part of surrogate pair: (while read the value of key s), e.what() = DB::Exception\n',
  syntax: 'Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position 1: SELEC 1. Expected one of: SYSTEM query, e.what() = DB::Exception\n',
  unknownType: 'Code: 50, e.displayText() = DB::Exception: Unknown data type family: DateTime64, e.what() = DB::Exception\n',
};
const NEW = {
  auth: 'Code: 516. DB::Exception: default: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED) (version 26.9.2.1)\n',
  unknownTable: 'Code: 60. DB::Exception: Table oomtrail.nope does not exist. Maybe you meant system.one?. (UNKNOWN_TABLE) (version 26.9.2.1)\n',
  parse: "Code: 27. DB::Exception: Cannot parse input: expected '\"' before: 'x\"}': (while reading the value of key a): (at row 1)\n: While executing ParallelParsingBlockInputFormat. (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 26.9.2.1)\n",
  tooManyParts: 'Code: 252. DB::Exception: Too many parts (300) in table. Merges are processing significantly slower than inserts. (TOO_MANY_PARTS) (version 26.9.2.1)\n',
  memory: 'Code: 241. DB::Exception: Memory limit (total) exceeded: would use 9.31 GiB. (MEMORY_LIMIT_EXCEEDED) (version 26.9.2.1)\n',
  unknownStatus: 'Code: 319. DB::Exception: Unknown status, client must retry. (UNKNOWN_STATUS_OF_INSERT) (version 26.9.2.1)\n',
  readonly: 'Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY) (version 26.9.2.1)\n',
  denied: 'Code: 497. DB::Exception: u: Not enough privileges. To execute this query, it is necessary to have the grant INSERT ON oomtrail.oom_kills. (ACCESS_DENIED) (version 26.9.2.1)\n',
  typeMismatch: 'Code: 53. DB::Exception: Type mismatch in IN or VALUES section. (TYPE_MISMATCH) (version 26.9.2.1)\n',
  logical: 'Code: 49. DB::Exception: Something went wrong. (LOGICAL_ERROR) (version 26.9.2.1)\n',
};

function cls(status: number, body: string, headers: Record<string, string> = {}): FailureClass {
  return classifyResponse(status, body, headers).class;
}

describe('clickhouse errors: parsing', () => {
  test('the code, in both servers\' formats', () => {
    assert.equal(parseCode(OLD.wrongPassword), 193);
    assert.equal(parseCode(NEW.auth), 516);
    assert.equal(parseCode('<html>502 Bad Gateway</html>'), undefined);
  });

  test('the row an insert stopped at, when the server names it', () => {
    const body = "Code: 27. DB::Exception: Cannot parse input: expected '\"' before: 'x': (while reading the value of key victim_pid): (at row 131)\n: While executing ParallelParsingBlockInputFormat. (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 26.9.2.1)";
    assert.equal(classifyResponse(400, body).row, 131);
    assert.equal(classifyResponse(400, 'Code: 27. DB::Exception: Cannot parse input').row, undefined);
  });

  test('the message without tails', () => {
    assert.equal(serverMessage(OLD.unknownTable), "Table default.nope doesn't exist.");
    assert.equal(serverMessage(NEW.unknownTable), 'Table oomtrail.nope does not exist. Maybe you meant system.one?.');
    assert.equal(serverMessage(OLD.wrongPassword), 'Wrong password for user default');
    assert.equal(serverMessage('<html>\n<body>502 Bad Gateway</body>\n</html>'), '<html> <body>502 Bad Gateway</body> </html>');
    assert.ok(serverMessage('x'.repeat(2000)).length <= 500);
  });

  test('Retry-After: seconds or an HTTP date', () => {
    assert.equal(parseRetryAfter('7'), 7000);
    assert.equal(parseRetryAfter(['1.5']), 1500);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000);
    assert.equal(parseRetryAfter(undefined), undefined);
    assert.equal(parseRetryAfter('soon'), undefined);
  });
});

describe('clickhouse errors: classification table', () => {
  const cases: Array<[string, number, string, FailureClass, Record<string, string>?]> = [
    // data the server will never accept: rejected (dead letter) with its message
    ['18.16 parse error (500)', 500, OLD.parse, 'data'],
    ['18.16 bad escape (400)', 400, OLD.surrogate, 'data'],
    ['18.16 syntax error', 400, OLD.syntax, 'data'],
    ['26.9 parse error', 400, NEW.parse, 'data', { 'x-clickhouse-exception-code': '27' }],
    ['26.9 type mismatch', 400, NEW.typeMismatch, 'data'],
    ['a 413 from a proxy', 413, '<html>Request Entity Too Large</html>', 'data'],
    ['a 400 without a code', 400, 'bad request', 'data'],
    // only an operator can fix: retryable after config_error_retry_ms, logged as an error
    ['18.16 wrong password (401)', 401, OLD.wrongPassword, 'operator'],
    ['26.9 auth failed (401)', 401, NEW.auth, 'operator', { 'x-clickhouse-exception-code': '516' }],
    ['auth failed, no header, status 500', 500, NEW.auth, 'operator'],
    ['18.16 unknown table (404)', 404, OLD.unknownTable, 'operator'],
    ['26.9 unknown table', 404, NEW.unknownTable, 'operator'],
    ['18.16 unknown setting', 404, OLD.unknownSetting, 'operator'],
    ['18.16 unknown type (schema DDL)', 500, OLD.unknownType, 'operator'],
    ['readonly user', 500, NEW.readonly, 'operator'],
    ['no grant', 500, NEW.denied, 'operator'],
    ['a 403 without a code', 403, 'Forbidden', 'operator'],
    ['a 404 without a code (wrong URL path)', 404, 'Not Found', 'operator'],
    ['auth text without a code', 500, 'Authentication failed for user x', 'operator'],
    // the server or the network: retryable
    ['26.9 unknown status of insert', 500, NEW.unknownStatus, 'transient'],
    ['26.9 logical error', 500, NEW.logical, 'transient'],
    ['a 502 from a proxy', 502, '<html>502 Bad Gateway</html>', 'transient'],
    ['a 500 without a code', 500, '', 'transient'],
    ['408', 408, 'timeout', 'transient'],
    // overload: retryable, with a delay
    ['429', 429, 'slow down', 'overload', { 'retry-after': '3' }],
    ['503', 503, 'unavailable', 'overload'],
    ['503 with a data code is still 503', 503, NEW.parse, 'overload'],
    ['too many parts', 500, NEW.tooManyParts, 'overload'],
    ['memory limit', 500, NEW.memory, 'overload'],
  ];
  for (const [what, status, body, want, headers] of cases) {
    test(`${what} → ${want}`, () => assert.equal(cls(status, body, headers), want));
  }

  test('the reason names status, code, type and the server message', () => {
    const c = classifyResponse(404, OLD.unknownTable);
    assert.equal(c.reason, "HTTP 404, code 60 (UNKNOWN_TABLE): Table default.nope doesn't exist.");
    assert.equal(c.code, 60);
  });

  test('overload delays: Retry-After wins, else a floor per code', () => {
    assert.equal(classifyResponse(429, '', { 'retry-after': '3' }).retryAfterMs, 3000);
    assert.equal(classifyResponse(503, '').retryAfterMs, 1000);
    assert.equal(classifyResponse(500, NEW.tooManyParts).retryAfterMs, 10_000);
  });

  test('the header code wins over the body', () => {
    assert.equal(classifyResponse(500, 'garbage', { 'x-clickhouse-exception-code': '193' }).class, 'operator');
  });
});

describe('clickhouse errors: thrown', () => {
  const sys = (code: string, message = code): Error => Object.assign(new Error(message), { code });
  test('network failures are transient', () => {
    for (const c of ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND']) {
      assert.equal(classifyThrown(sys(c, `connect ${c} 127.0.0.1:1`)).class, 'transient', c);
    }
    assert.equal(classifyThrown(new Error('Timeout error.')).class, 'transient');
    assert.equal(classifyThrown(new Error('socket hang up')).class, 'transient');
    assert.equal(classifyThrown(new Error('something odd')).class, 'transient', 'unknown: never lose records on a guess');
  });
  test('TLS failures need an operator', () => {
    assert.equal(classifyThrown(sys('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate')).class, 'operator');
    assert.equal(classifyThrown(sys('ERR_TLS_CERT_ALTNAME_INVALID')).class, 'operator');
  });
  test("@clickhouse/client's ClickHouseError (code as a numeric string)", () => {
    const e = Object.assign(new Error('default: Authentication failed: password is incorrect'), { code: '516', type: 'AUTHENTICATION_FAILED' });
    const c = classifyThrown(e);
    assert.equal(c.class, 'operator');
    assert.equal(c.code, 516);
    const d = Object.assign(new Error('Cannot parse input'), { code: '27', type: 'CANNOT_PARSE_INPUT_ASSERTION_FAILED' });
    assert.equal(classifyThrown(d).class, 'data');
  });
  test('an unparsed 18.16 error (the client left code/type undefined)', () => {
    assert.equal(classifyThrown(new Error(OLD.wrongPassword)).class, 'operator');
    assert.equal(classifyThrown(new Error(OLD.parse)).class, 'data');
  });
});

describe('clickhouse errors: the one authentication list', () => {
  test('192/193/194/516 are the credentials, 195 is the host; all need an operator; 497 is a permission, not auth', () => {
    for (const code of [192, 193, 194, 516]) {
      assert.equal(authFailure({ code, reason: '' }), 'credentials', String(code));
      assert.equal(classifyResponse(401, `Code: ${code}. DB::Exception: x`).class, 'operator');
    }
    assert.equal(authFailure({ code: 195, reason: 'Authentication failed' }), 'host', 'the code wins over the text');
    assert.equal(classifyResponse(403, 'Code: 195. DB::Exception: x').class, 'operator');
    assert.equal(authFailure({ code: 497, reason: 'ACCESS_DENIED' }), undefined);
    assert.equal(authFailure({ code: 60, reason: 'password' }), undefined, 'a known other code is not auth');
    // no code (a proxy, an old server's unparsed text): the text decides
    assert.equal(authFailure({ reason: 'HTTP 403: User default is not allowed to connect from address 10.1.2.3' }), 'host');
    assert.equal(authFailure({ reason: 'HTTP 401: Unauthorized' }), 'credentials');
    assert.equal(authFailure({ reason: 'HTTP 500: boom' }), undefined);
  });
});
