/*
 * The docs that list what the code defines are checked against the code (issue 26, part 4):
 *   - docs/queries.md's DDL (for create_schema: false) = the schema the sink's migrations end with;
 *   - docs/loki.md's structured-metadata list and trim order = the encoder's;
 *   - docs/metrics.md's table = the metrics registry (name, type, labels), both ways; every `oomtrail_…` metric
 *     the README or docs name is registered, with its labels;
 *   - docs/config.md = the reference generated from the convict schema (every key: env, default, doc).
 * The generated parts are rewritten by `npm run docs` (scripts/gen-docs.ts); each failure says so.
 * The DDL is also run on the real ClickHouse engine, with every cookbook query and Grafana panel:
 * test/integration/clickhouse-docs.test.ts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  configKeys,
  queriesDocDdl,
  generatedFiles,
  latestTableSql,
  parseConfigReference,
  parseMetricsTable,
  REGENERATE,
  registryMetrics,
} from '../../scripts/gen-docs';
import { METADATA_FIELDS, StreamBuilder, type LokiLimits } from '../../src/sinks/loki/encode';
import { MIGRATIONS } from '../../src/sinks/clickhouse/schema';
import type { OomRecord } from '../../src/record/record';
import { baseRecord } from '../helpers/records';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const read = (f: string): string => fs.readFileSync(path.join(ROOT, f), 'utf8');
const STALE = `run \`${REGENERATE}\` and commit the result`;

const docDdl = (): string => queriesDocDdl(read('docs/queries.md'));

/** Column names of a CREATE TABLE, in order. */
const ddlColumns = (ddl: string): string[] => [...ddl.matchAll(/^\s+`([^`]+)`\s+\S/gm)].map((m) => m[1]!);

describe('docs/queries.md: the ClickHouse DDL for create_schema: false', () => {
  test('has every column of the latest migration, and only those', () => {
    const want = ddlColumns(latestTableSql({ database: 'oomtrail', table: 'oom_kills', ttlDays: 365 }));
    const got = ddlColumns(docDdl());
    const missing = want.filter((c) => !got.includes(c));
    const extra = got.filter((c) => !want.includes(c));
    assert.deepEqual({ missing, extra }, { missing: [], extra: [] }, `docs/queries.md's DDL vs migrations 1..${MIGRATIONS.length}: ${STALE}`);
    assert.deepEqual(got, want, 'same column order as the migrated table');
  });

  test('is the generated DDL, character for character', () => {
    assert.equal(docDdl(), latestTableSql({ database: 'oomtrail', table: 'oom_kills', ttlDays: 365 }), STALE);
  });

  test('folding the migrations covers every statement (a migration that is not ADD COLUMN fails here)', () => {
    const ddl = latestTableSql({ database: 'd', table: 't', ttlDays: 0 });
    for (const m of MIGRATIONS.slice(1)) assert.ok(ddl.includes(`-- migration ${m.version}: `), `migration ${m.version} folded in`);
    assert.ok(!/\nTTL /.test(ddl), 'ttlDays 0: no TTL');
  });
});

describe('docs/loki.md: structured metadata', () => {
  const text = read('docs/loki.md');
  const row = text.split('\n').find((l) => l.startsWith('| **structured metadata**'));
  const documented = row ? [...row.split(' | ')[1]!.matchAll(/`([a-z0-9_]+)`/g)].map((m) => m[1]!) : [];

  test("the stream-design table lists the encoder's fields, in its order", () => {
    assert.ok(row, 'docs/loki.md has the "| **structured metadata** |" row');
    const fields = [...METADATA_FIELDS] as string[];
    assert.deepEqual(
      { missing: fields.filter((f) => !documented.includes(f)), extra: documented.filter((f) => !fields.includes(f)) },
      { missing: [], extra: [] },
      'docs/loki.md vs METADATA_FIELDS (src/sinks/loki/encode.ts)',
    );
    assert.deepEqual(documented, fields, 'in the order the encoder sends (and keeps) them');
  });

  test('the stated trim order is the encoder\'s: the last listed field is dropped first', () => {
    const m = /dropped from the\s+least important end \(`([a-z0-9_]+)` first … `([a-z0-9_]+)` last\)/.exec(text);
    assert.ok(m, 'docs/loki.md states the trim order as "dropped from the least important end (`X` first … `Y` last)"');
    assert.deepEqual([m[1], m[2]], [METADATA_FIELDS.at(-1), METADATA_FIELDS[0]], 'first dropped, last dropped');
    // and the encoder does what the doc says: under a limit of k entries the first k listed are kept
    const full = baseRecord({}) as unknown as Record<string, unknown>;
    for (const f of METADATA_FIELDS) if (full[f] === null || full[f] === undefined || full[f] === '') full[f] = f === 'victim_is_container_init' || f === 'oom_group_kill' ? true : f.endsWith('_pid') || f.endsWith('_size') ? 7 : `x-${f}`;
    const limits: LokiLimits = { max_label_names_per_series: 15, max_label_value_length: 2048, max_line_size: 262_144, max_structured_metadata_size: 65_536, max_structured_metadata_entries: 128 };
    for (const k of [documented.length, 5, 1]) {
      const { streams } = new StreamBuilder({ ...limits, max_structured_metadata_entries: k }, []).build([full as unknown as OomRecord]);
      assert.deepEqual(streams[0]!.entries[0]!.metadata.map(([name]) => name), documented.slice(0, k), `limit ${k}`);
    }
  });
});

describe('docs/metrics.md: every metric series', () => {
  const registry = registryMetrics();
  const table = parseMetricsTable(fs.existsSync(path.join(ROOT, 'docs/metrics.md')) ? read('docs/metrics.md') : '');

  test('every registered series is in the table with its type and labels, and nothing else is', () => {
    const key = (m: { name: string; type: string; labels: string[] }) => `${m.name} ${m.type} {${m.labels.join(',')}}`;
    const want = registry.map(key);
    const got = table.map(key);
    assert.deepEqual(
      { undocumented: want.filter((k) => !got.includes(k)), notInRegistry: got.filter((k) => !want.includes(k)) },
      { undocumented: [], notInRegistry: [] },
      `docs/metrics.md vs src/observe/metrics.ts: ${STALE}`,
    );
  });

  test('every metric registered anywhere in src/ is in the registry the table is generated from', () => {
    const walk = (d: string): string[] =>
      fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : e.name.endsWith('.ts') ? [path.join(d, e.name)] : []));
    const names = new Set<string>();
    for (const f of walk(path.join(ROOT, 'src'))) {
      for (const m of fs.readFileSync(f, 'utf8').matchAll(/\.(?:counter|gauge)\(\s*['"`](oomtrail_[a-z0-9_]+)['"`]/g)) names.add(m[1]!);
    }
    assert.ok(names.size >= registry.length, `${names.size} registrations found`);
    const listed = new Set(registry.map((m) => m.name));
    assert.deepEqual([...names].filter((n) => !listed.has(n)), [], 'registered outside PipelineMetrics: add them to registryMetrics() in scripts/gen-docs.ts');
  });

  test('README links docs/metrics.md', () => {
    assert.match(read('README.md'), /\(docs\/metrics\.md\)/);
  });

  test('every `oomtrail_…` metric the README and docs name is registered, with labels it has', () => {
    const files = ['README.md', ...fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
    const bad: string[] = [];
    for (const f of files) {
      for (const m of read(f).matchAll(/`(oomtrail_[a-z0-9_]+)(?:\{([^`}]*)\})?`/g)) {
        const metric = registry.find((r) => r.name === m[1]);
        if (!metric) {
          bad.push(`${f}: ${m[0]} is not a registered metric`);
          continue;
        }
        for (const l of (m[2] ?? '').split(',').map((x) => x.trim().split('=')[0]!).filter(Boolean)) {
          if (!metric.labels.includes(l)) bad.push(`${f}: ${m[0]}: ${m[1]} has no label ${l}`);
        }
      }
    }
    assert.deepEqual(bad, []);
  });

  test('the README names no counter that does not exist (`lost_events` is a BPF map counter, not a metric)', () => {
    assert.doesNotMatch(read('README.md'), /counted \(`lost_events`\)/);
  });
});

describe('docs/config.md: the configuration reference', () => {
  test('every schema key is documented with its env var, default and doc', () => {
    const doc = fs.existsSync(path.join(ROOT, 'docs/config.md')) ? parseConfigReference(read('docs/config.md')) : new Map();
    const keys = configKeys();
    assert.ok(keys.length > 100, `${keys.length} keys`);
    const missing = keys.filter((k) => !doc.has(k.key)).map((k) => k.key);
    assert.deepEqual({ missing, missingCount: missing.length }, { missing: [], missingCount: 0 }, `docs/config.md: ${STALE}`);
    for (const k of keys) assert.equal(doc.get(k.key)!.env, k.env, k.key);
    assert.deepEqual([...doc.keys()].filter((k) => !keys.some((s) => s.key === k)), [], 'no key that the schema lacks');
  });

  test('README links docs/config.md', () => {
    assert.match(read('README.md'), /\(docs\/config\.md\)/);
  });
});

test(`every generated doc is what \`${REGENERATE}\` writes`, () => {
  const stale = generatedFiles(ROOT).filter((g) => g.current !== g.wanted).map((g) => g.file);
  assert.deepEqual(stale, [], `out of date: ${stale.join(', ')}: ${STALE}`);
});
