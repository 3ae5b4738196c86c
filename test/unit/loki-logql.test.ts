/* Every LogQL query in docs/loki.md parses with Grafana's own LogQL grammar (the real Loki runs them in
 * test/integration/loki.test.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parser } from '@grafana/lezer-logql';
import { readCookbook } from '../servers/loki/cookbook';

function errors(query: string): string[] {
  const out: string[] = [];
  parser.parse(query).iterate({
    enter: (n) => {
      if (n.type.isError) out.push(`error node at ${n.from}: ${JSON.stringify(query.slice(Math.max(0, n.from - 10), n.to + 10))}`);
    },
  });
  return out;
}

test('the cookbook has its queries', () => {
  assert.ok(readCookbook().length >= 8, 'docs/loki.md lost its cookbook');
});

for (const { title, query } of readCookbook()) {
  test(`LogQL parses: ${title}`, () => {
    assert.deepEqual(errors(query), [], query);
    const top = parser.parse(query).topNode;
    assert.equal(top.name, 'LogQL');
  });
}

test('the grammar does reject broken LogQL (the check above is not vacuous)', () => {
  for (const bad of ['sum by (host) (count_over_time({job="oomtrail"}[5m])', '{job="oomtrail"} | json |', '{job=oomtrail}']) {
    assert.ok(errors(bad).length > 0, bad);
  }
});
