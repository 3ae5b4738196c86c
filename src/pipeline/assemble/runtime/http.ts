import http from 'node:http';

/** A runtime API that did not answer as expected; never thrown past a lookup (unknown stays empty). */
export class RuntimeApiError extends Error {
  readonly retriable = true;
  constructor(
    readonly code: 'RUNTIME_UNREACHABLE' | 'RUNTIME_TIMEOUT' | 'RUNTIME_HTTP' | 'RUNTIME_PROTOCOL',
    message: string,
  ) {
    super(message);
    this.name = 'RuntimeApiError';
  }
}

/** GET over a unix socket; rejects on a status other than 200/404 (404 resolves with body null). */
export function getJson(socket: string, path: string, timeoutMs: number, signal?: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err: Error | null, v?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      req.destroy();
      if (err) reject(err);
      else resolve(v);
    };
    const onAbort = () => finish(new RuntimeApiError('RUNTIME_TIMEOUT', `${path}: given up`));
    const req = http.get({ socketPath: socket, path, headers: { host: 'localhost' }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => finish(new RuntimeApiError('RUNTIME_UNREACHABLE', `${path}: ${e.message}`)));
      res.on('end', () => {
        if (res.statusCode === 404) return finish(null, null);
        if (res.statusCode !== 200) return finish(new RuntimeApiError('RUNTIME_HTTP', `${path}: HTTP ${res.statusCode}`));
        try {
          finish(null, JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch {
          finish(new RuntimeApiError('RUNTIME_PROTOCOL', `${path}: not JSON`));
        }
      });
    });
    req.on('error', (e) => finish(new RuntimeApiError('RUNTIME_UNREACHABLE', `${socket}: ${e.message}`)));
    const timer = setTimeout(() => finish(new RuntimeApiError('RUNTIME_TIMEOUT', `${socket}${path}: no answer in ${timeoutMs} ms`)), timeoutMs);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort);
  });
}

/**
 * A long-lived GET whose body is one JSON document per line (docker's /events). `onOpen` fires when the
 * response headers arrive (the stream is live); the promise settles when the stream ends or fails.
 */
export function streamJsonLines(
  socket: string,
  path: string,
  onOpen: () => void,
  onDoc: (doc: unknown) => void,
  openTimeoutMs: number,
): { done: Promise<void>; close: () => void } {
  let req: http.ClientRequest;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      req.destroy(new RuntimeApiError('RUNTIME_TIMEOUT', `${socket}${path}: no answer in ${openTimeoutMs} ms`));
    }, openTimeoutMs);
    timer.unref();
    req = http.get({ socketPath: socket, path, headers: { host: 'localhost' }, agent: false }, (res) => {
      clearTimeout(timer);
      if (res.statusCode !== 200) {
        res.resume();
        return reject(new RuntimeApiError('RUNTIME_HTTP', `${path}: HTTP ${res.statusCode}`));
      }
      onOpen();
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => {
        buf += s;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          try {
            onDoc(JSON.parse(line));
          } catch {
            /* one bad line does not end the stream */
          }
        }
      });
      res.on('end', () => resolve());
      res.on('error', (e) => reject(e));
      res.on('close', () => resolve());
    });
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e instanceof RuntimeApiError ? e : new RuntimeApiError('RUNTIME_UNREACHABLE', `${socket}: ${e.message}`));
    });
  });
  return { done, close: () => req.destroy() };
}
