import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deferredLogger } from '../../src/observe/deferred';
import type { Logger } from '../../src/observe/logger';

test('deferredLogger: calls before attach are replayed in order (above the level dropped), later ones forwarded', () => {
  const seen: string[] = [];
  const real = {
    info: (m: string) => seen.push(`info ${m}`),
    warn: (m: string) => seen.push(`warn ${m}`),
    debug: (m: string) => seen.push(`debug ${m}`),
    error: (m: string) => seen.push(`error ${m}`),
  } as unknown as Logger;
  const early = deferredLogger('info');
  early.logger.info('a');
  early.logger.debug('libbpf chatter');
  early.logger.warn('b');
  assert.deepEqual(seen, [], 'nothing reaches a logger before there is one');
  early.attach(real);
  assert.deepEqual(seen, ['info a', 'warn b']);
  early.logger.error('c');
  early.logger.debug('d');
  assert.deepEqual(seen, ['info a', 'warn b', 'error c', 'debug d'], 'after attach the real logger decides');
});
