#!/usr/bin/env python3
"""
A small HTTP front over one persistent chdb session (the current ClickHouse engine, in-process):
enough of ClickHouse's HTTP interface for @clickhouse/client (ping, command, insert, query, exec).

What the client needs of it, each observed (see shared/docs/test-servers.md):
- chunked request bodies decoded (inserts are streamed), gzip/deflate request bodies decompressed;
- HTTP/1.1 keep-alive with Content-Length on every reply, the request body always consumed;
- TCP_NODELAY (without it each reply waits ~40 ms for the peer's delayed ACK);
- SQL = `query` param + newline + body; `INSERT ... FORMAT X` bodies are streamed into the engine as bytes;
- URL settings applied for one request (SET) and reset afterwards (the session persists);
- `param_*` -> query parameters, `database` -> USE; errors as `Code: N. DB::Exception: ... (NAME) (version V)`
  with X-ClickHouse-Exception-Code and an HTTP status like the real server's; gzip replies when asked;
- the chdb connection object stays referenced for the life of the process.

Test-only faults (with --faults): POST /__fault?... arms a fault for the next inserts, GET /__stats counts requests.
Listens on 127.0.0.1 only. Prints `READY <port>` on stdout once it accepts connections.
"""
import argparse
import base64
import gzip
import json
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import chdb

# URL parameters that are not settings
NOT_SETTINGS = {
    'query', 'database', 'default_format', 'query_id', 'session_id', 'session_timeout', 'session_check',
    'user', 'password', 'quota_key', 'compress', 'decompress', 'buffer_size', 'wait_end_of_query', 'role',
    'stacktrace', 'enable_http_compression', 'http_zlib_compression_level', 'send_progress_in_http_headers',
    'http_headers_progress_interval_ms',
}
STATUS_BY_CODE = {
    516: 401, 192: 401, 193: 401, 194: 401,
    497: 403, 291: 403, 164: 403, 195: 403,
    60: 404, 81: 404,
    6: 400, 25: 400, 26: 400, 27: 400, 38: 400, 41: 400, 53: 400, 62: 400, 72: 400, 115: 400, 117: 400,
    202: 503, 159: 504,
}
INSERT_RE = re.compile(r'^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>\w+)\s*$', re.I | re.S)
CODE_RE = re.compile(r'Code: (\d+)')
STREAM_PREFIX_RE = re.compile(r'^(Streaming insert (append|finish) failed|Failed to cancel insert stream): ')


class Front:
    def __init__(self, args):
        self.args = args
        self.conn = chdb.connect(args.path)  # keep referenced: dropping it ended the process silently
        self.lock = threading.Lock()
        self.version = self.conn.query('SELECT version()', 'TSV').bytes().decode().strip()
        self.stats = {'requests': 0, 'inserts': 0, 'insert_rows': 0, 'auth_failures': 0, 'errors': 0, 'gzip_bodies': 0}
        self.faults = {'drop_reply': 0, 'fail': 0, 'fail_status': 503, 'fail_code': 0, 'retry_after': '', 'delay_ms': 0}
        self.stats_lock = threading.Lock()

    def count(self, key, n=1):
        with self.stats_lock:
            self.stats[key] = self.stats.get(key, 0) + n


class ClickHouseError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def sql_string(v):
    return "'" + v.replace('\\', '\\\\').replace("'", "\\'") + "'"


def make_handler(front):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'
        server_version = 'chdb-front'
        sys_version = ''

        def setup(self):
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, fmt, *a):  # quiet
            if front.args.verbose:
                sys.stderr.write('chdb-front: ' + (fmt % a) + '\n')

        # -- body ----------------------------------------------------------------------------------------
        def read_body(self):
            te = (self.headers.get('Transfer-Encoding') or '').lower()
            if 'chunked' in te:
                parts = []
                while True:
                    line = self.rfile.readline()
                    if not line:
                        break
                    size = int(line.split(b';')[0].strip() or b'0', 16)
                    if size == 0:
                        while True:  # trailers
                            t = self.rfile.readline()
                            if not t or t in (b'\r\n', b'\n'):
                                break
                        break
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                body = b''.join(parts)
            else:
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n) if n > 0 else b''
            enc = (self.headers.get('Content-Encoding') or '').lower()
            if enc == 'gzip':
                front.count('gzip_bodies')
                body = gzip.decompress(body)
            elif enc == 'deflate':
                body = zlib.decompress(body)
            elif enc not in ('', 'identity'):
                raise ClickHouseError(1, 'Code: 1. DB::Exception: Unknown HTTP request Content-Encoding: %s. (UNSUPPORTED_METHOD)' % enc)
            return body

        # -- replies -------------------------------------------------------------------------------------
        def reply(self, status, body, headers=None, gzip_ok=False):
            headers = dict(headers or {})
            ctype = headers.pop('Content-Type', 'text/plain; charset=UTF-8')
            if gzip_ok and body:
                body = gzip.compress(body, 1)
                headers['Content-Encoding'] = 'gzip'
            self.send_response(status)
            self.send_header('Content-Type', ctype)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header('Keep-Alive', 'timeout=%d' % front.args.keep_alive_timeout)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def reply_error(self, code, message, gzip_ok=False, status=None, extra=None):
            front.count('errors')
            if not message.endswith(')') or '(version' not in message:
                message = '%s (version %s)' % (message.rstrip(), front.version)
            headers = {'X-ClickHouse-Exception-Code': str(code)}
            if extra:
                headers.update(extra)
            self.reply(status or STATUS_BY_CODE.get(code, 500), (message + '\n').encode(), headers, gzip_ok)

        # -- auth ----------------------------------------------------------------------------------------
        def authenticate(self, params):
            user, password = 'default', ''
            auth = self.headers.get('Authorization') or ''
            if auth.startswith('Basic '):
                try:
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(':')
                except Exception:
                    user, password = '', ''
            if self.headers.get('X-ClickHouse-User'):
                user = self.headers.get('X-ClickHouse-User')
                password = self.headers.get('X-ClickHouse-Key') or ''
            if 'user' in params:
                user = params['user']
                password = params.get('password', '')
            return user == front.args.user and password == front.args.password

        def do_GET(self):
            self.handle_request()

        def do_POST(self):
            self.handle_request()

        def handle_request(self):
            front.count('requests')
            url = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            gzip_ok = params.get('enable_http_compression') == '1' and 'gzip' in (self.headers.get('Accept-Encoding') or '')
            try:
                body = self.read_body()  # always consume the body, even before an auth error
            except ClickHouseError as e:
                return self.reply_error(e.code, str(e))
            except Exception as e:  # noqa: BLE001
                return self.reply_error(33, 'Code: 33. DB::Exception: Cannot read request body: %s. (CANNOT_READ_ALL_DATA)' % e)
            if url.path == '/ping':
                return self.reply(200, b'Ok.\n')
            if front.args.faults and url.path == '/__stats':
                with front.stats_lock:
                    data = json.dumps(front.stats).encode()
                return self.reply(200, data, {'Content-Type': 'application/json'})
            if front.args.faults and url.path == '/__fault':
                for k in ('drop_reply', 'fail', 'fail_status', 'fail_code', 'delay_ms'):
                    if k in params:
                        front.faults[k] = int(params[k])
                if 'retry_after' in params:
                    front.faults['retry_after'] = params['retry_after']
                return self.reply(200, b'ok\n')
            if url.path not in ('/', ''):
                return self.reply(404, b'There is no handle %s\n' % url.path.encode())
            if not self.authenticate(params):
                front.count('auth_failures')
                return self.reply_error(
                    516,
                    'Code: 516. DB::Exception: %s: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)'
                    % (params.get('user') or 'default'),
                    gzip_ok,
                )
            query = params.get('query')
            if query is None:
                sql, data = body.decode('utf-8', 'surrogateescape'), b''
            else:
                sql, data = query, body
            settings = {k: v for k, v in params.items() if k not in NOT_SETTINGS and not k.startswith('param_')}
            qparams = {k[6:]: v for k, v in params.items() if k.startswith('param_')}
            out_format = params.get('default_format', 'TabSeparated')
            insert = INSERT_RE.match(sql) if data else None
            if insert:
                f = front.faults
                if f['fail'] > 0:
                    f['fail'] -= 1
                    extra = {'Retry-After': f['retry_after']} if f['retry_after'] else None
                    code = f['fail_code'] or 202
                    return self.reply_error(code, 'Code: %d. DB::Exception: injected fault. (INJECTED)' % code, gzip_ok, f['fail_status'], extra)
            t0 = time.monotonic()
            try:
                with front.lock:
                    try:
                        if params.get('database'):
                            front.conn.query('USE ' + '`' + params['database'].replace('`', '\\`') + '`')
                        for k, v in settings.items():
                            if not re.match(r'^[A-Za-z0-9_]+$', k):
                                raise ClickHouseError(115, 'Code: 115. DB::Exception: Unknown setting %s. (UNKNOWN_SETTING)' % k)
                            front.conn.query('SET %s = %s' % (k, sql_string(v)))
                        if insert:
                            front.count('inserts')
                            ins = front.conn.send_insert('INSERT INTO ' + insert.group('target'), insert.group('fmt'))
                            try:
                                ins.append(data)
                                res = ins.finish()
                            except BaseException:
                                try:
                                    ins.cancel()
                                except Exception:  # noqa: BLE001
                                    pass
                                raise
                            front.count('insert_rows', res.rows_written)
                            summary = {'read_rows': '0', 'read_bytes': '0', 'written_rows': str(res.rows_written),
                                       'written_bytes': str(res.bytes_written), 'total_rows_to_read': '0',
                                       'result_rows': str(res.rows_written), 'result_bytes': str(res.bytes_written),
                                       'elapsed_ns': str(int(res.elapsed * 1e9))}
                            out = b''
                        else:
                            full = sql if not data else sql + '\n' + data.decode('utf-8', 'surrogateescape')
                            r = front.conn.query(full, out_format, params=qparams or None)
                            out = r.bytes() if hasattr(r, 'bytes') else (r or b'')
                            if isinstance(out, str):
                                out = out.encode()
                            summary = {'read_rows': str(r.rows_read() if hasattr(r, 'rows_read') else 0),
                                       'read_bytes': str(r.bytes_read() if hasattr(r, 'bytes_read') else 0),
                                       'written_rows': '0', 'written_bytes': '0', 'total_rows_to_read': '0',
                                       'result_rows': '0', 'result_bytes': str(len(out)),
                                       'elapsed_ns': str(int((time.monotonic() - t0) * 1e9))}
                    finally:
                        for k in settings:
                            if re.match(r'^[A-Za-z0-9_]+$', k):
                                try:
                                    front.conn.query('SET %s = DEFAULT' % k)
                                except Exception:  # noqa: BLE001
                                    pass
                        if params.get('database'):
                            front.conn.query('USE default')
            except ClickHouseError as e:
                return self.reply_error(e.code, str(e), gzip_ok)
            except Exception as e:  # noqa: BLE001 - the engine's errors carry "Code: N"
                msg = STREAM_PREFIX_RE.sub('', str(e))
                m = CODE_RE.search(msg)
                code = int(m.group(1)) if m else 1001
                return self.reply_error(code, msg, gzip_ok)
            if insert:
                f = front.faults
                if f['delay_ms'] > 0:
                    time.sleep(f['delay_ms'] / 1000)
                if f['drop_reply'] > 0:
                    # the insert is committed, the acknowledgement is lost: close without a reply
                    f['drop_reply'] -= 1
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
            headers = {'X-ClickHouse-Summary': json.dumps(summary), 'X-ClickHouse-Query-Id': params.get('query_id', ''),
                       'X-ClickHouse-Format': out_format, 'X-ClickHouse-Timezone': 'UTC'}
            if out_format.startswith('JSON'):
                headers['Content-Type'] = 'application/json; charset=UTF-8'
            self.reply(200, out, headers, gzip_ok)

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--path', required=True, help='chdb session directory (persistent)')
    p.add_argument('--port', type=int, default=0)
    p.add_argument('--user', default='default')
    p.add_argument('--password', default='')
    p.add_argument('--keep-alive-timeout', type=int, default=10)
    p.add_argument('--faults', action='store_true', help='enable /__fault and /__stats (tests only)')
    p.add_argument('--verbose', action='store_true')
    args = p.parse_args()
    front = Front(args)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(('127.0.0.1', args.port), make_handler(front))

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print('READY %d %s' % (server.server_address[1], front.version), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        with front.lock:
            front.conn.close()


if __name__ == '__main__':
    main()
