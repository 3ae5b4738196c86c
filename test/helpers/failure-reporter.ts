/*
 * A node:test reporter beside the spec one in scripts/test.sh: every failed test's name, file and error, bounded, to a
 * file that the script prints at its very end. The spec reporter prints a failure where it happened, which in a full
 * run can be half an hour of output before the end, and a CI log shown from its tail then names no reason.
 */
import type { TestEvent } from 'node:test/reporters';

const MAX_LINES = 60;
const MAX_CHARS = 6000;

function bounded(text: string): string {
  let out = text.length > MAX_CHARS ? `${text.slice(0, MAX_CHARS)}\n… (${text.length - MAX_CHARS} more characters)` : text;
  const lines = out.split('\n');
  if (lines.length > MAX_LINES) out = [...lines.slice(0, MAX_LINES), `… (${lines.length - MAX_LINES} more lines)`].join('\n');
  return out;
}

/** node:test's own wrapper (ERR_TEST_FAILURE) carries the thrown error as `cause`. */
function reason(error: unknown): string {
  const e = error as { failureType?: string; cause?: unknown; message?: string } | undefined;
  const thrown = e?.cause ?? e;
  if (thrown instanceof Error) return thrown.name === 'AssertionError' ? thrown.message : `${thrown.name}: ${thrown.message}`;
  if (thrown && typeof thrown === 'object' && 'message' in thrown) return String((thrown as { message: unknown }).message);
  return String(thrown);
}

async function* failureReporter(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  for await (const event of source) {
    if (event.type !== 'test:fail') continue;
    const { name, file, details } = event.data;
    const failureType = (details.error as { failureType?: string } | undefined)?.failureType;
    // a suite failing because a test in it failed: that test has its own entry
    if (failureType === 'subtestsFailed') continue;
    const where = file ? ` (${file.replace(/^.*?\/dist\//, 'dist/')})` : '';
    yield `✖ ${name}${where}${failureType && failureType !== 'testCodeFailure' ? ` [${failureType}]` : ''}\n${bounded(reason(details.error))
      .split('\n')
      .map((l) => `    ${l}`)
      .join('\n')}\n`;
  }
}

export = failureReporter;
