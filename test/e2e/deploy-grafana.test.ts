/*
 * grafana/: the provisioned dashboard's queries, checked for real.
 *  - Every Loki query (panels, the annotation, the host variable) parses with Grafana's own LogQL grammar
 *    (@grafana/lezer-logql) once Grafana's variables are substituted as Grafana would.
 *  - Every ClickHouse query runs on the production schema (src/sinks/clickhouse/schema.ts, every migration) in chdb
 *    (ClickHouse 26.9, test/servers/clickhouse) over the SQL cookbook's sample records, with the
 *    grafana-clickhouse-datasource macros expanded as the plugin does, and returns the expected rows.
 *  - Panels and provisioning agree on the datasource uids.
 *  - Every Loki query also runs on the real Loki 3.7.8 of the Loki sink's tests, over records the real Loki sink
 *    pushed: HTTP 200 (Loki's own parser and planner accept it) and the kill panels return data.
 * Needs the chdb venv and the Loki binary of test/servers/{clickhouse,loki}/setup.sh. Runtime: ~15 s (Loki start).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yaml from 'js-yaml';
import { parser } from '@grafana/lezer-logql';
import { REPO } from '../helpers/agent';
import { MIGRATIONS } from '../../src/sinks/clickhouse/schema';
import { encodeBatch } from '../../src/sinks/clickhouse/encoder';
import { cookbookRecords } from '../servers/clickhouse/records';
import { rows, sql, startChdb, type ServerHandle } from '../servers/clickhouse/servers';
import { startLoki, type LokiServer } from '../servers/loki/server';
import { lokiConfig } from '../servers/loki/records';
import { createLokiSink } from '../../src/sinks/loki';

/* eslint-disable @typescript-eslint/no-explicit-any */
const DASHBOARD = JSON.parse(fs.readFileSync(path.join(REPO, 'grafana/dashboards/oomtrail.json'), 'utf8'));
const DATASOURCES = yaml.load(fs.readFileSync(path.join(REPO, 'grafana/provisioning/datasources/oomtrail.yaml'), 'utf8')) as any;
const panels: any[] = DASHBOARD.panels.filter((p: any) => p.type !== 'row');
const lokiPanels = panels.filter((p) => p.datasource.type === 'loki');
const chPanels = panels.filter((p) => p.datasource.type === 'grafana-clickhouse-datasource');

/** Grafana's interpolation for the LogQL checks: the All value of $host, range/interval variables. */
function interpolateLogql(q: string): string {
  return q.replace(/\$__auto|\$__interval|\$__range/g, '5m').replace(/\$host\b/g, '.*');
}

function logqlErrors(q: string): string[] {
  const out: string[] = [];
  parser.parse(q).iterate({
    enter: (n) => {
      if (n.type.isError) out.push(`error node at ${n.from}: ${JSON.stringify(q.slice(Math.max(0, n.from - 15), n.to + 15))}`);
    },
  });
  return out;
}

/** The grafana-clickhouse-datasource macros as the plugin expands them (seconds since the epoch), host = All. */
function interpolateSql(q: string, fromS: number, toS: number): string {
  return q
    .replace(/\$__timeFilter\((\w+)\)/g, (_m, c) => `${c} >= toDateTime(${fromS}) AND ${c} <= toDateTime(${toS})`)
    .replace(/\$__timeInterval\((\w+)\)/g, (_m, c) => `toStartOfInterval(toDateTime(${c}), INTERVAL 300 second)`)
    .replace(/\$\{host:regex\}/g, '.*');
}

describe('grafana dashboard', () => {
  test('panels: unique ids, datasources provisioned by uid, Loki and ClickHouse both present', () => {
    const ids = DASHBOARD.panels.map((p: any) => p.id);
    assert.equal(new Set(ids).size, ids.length);
    const uids = new Set(DATASOURCES.datasources.map((d: any) => d.uid));
    for (const p of panels) {
      assert.ok(uids.has(p.datasource.uid), `${p.title}: datasource ${p.datasource.uid} is provisioned`);
      for (const t of p.targets) assert.equal(t.datasource.uid, p.datasource.uid);
    }
    assert.ok(lokiPanels.length >= 4 && chPanels.length >= 4, `${lokiPanels.length} Loki, ${chPanels.length} ClickHouse panels`);
    for (const title of ['Top containers by kills', 'Repeat offenders (restart loops)', 'memcg vs global kills', 'RSS at kill']) {
      assert.ok(chPanels.some((p) => p.title === title), title);
    }
  });

  const logql: Array<[string, string]> = [
    ...lokiPanels.flatMap((p) => p.targets.map((t: any): [string, string] => [p.title, t.expr])),
    ...DASHBOARD.annotations.list.filter((a: any) => a.expr).map((a: any): [string, string] => [`annotation ${a.name}`, a.expr]),
    ...DASHBOARD.templating.list
      .filter((v: any) => v.datasource?.type === 'loki')
      .map((v: any): [string, string] => [`variable ${v.name}`, v.query.stream]),
  ];
  for (const [title, expr] of logql) {
    test(`LogQL parses: ${title}`, () => {
      const q = interpolateLogql(expr);
      assert.doesNotMatch(q, /\$/, `uninterpolated variable in ${q}`);
      assert.deepEqual(logqlErrors(q), [], q);
      assert.equal(parser.parse(q).topNode.name, 'LogQL');
    });
  }

  test('the LogQL check is not vacuous', () => {
    assert.ok(logqlErrors(interpolateLogql('sum by (host) (count_over_time({job="oomtrail"} | json [$__auto])')).length > 0);
  });

  describe('Loki panels on a real Loki', () => {
    let loki: LokiServer;
    const now = Date.now();
    before(async () => {
      loki = await startLoki();
      const recent = cookbookRecords(now).filter((r) => Date.parse(r.time) > now - 12 * 3_600_000);
      const sink = createLokiSink(lokiConfig(loki.url));
      const res = await sink.write(recent);
      assert.equal(res.status, 'delivered', JSON.stringify(res));
      await sink.close();
    });
    after(async () => {
      await loki?.destroy();
    });

    for (const [title, expr] of logql) {
      test(`Loki runs: ${title}`, async () => {
        const q = interpolateLogql(expr);
        const params = new URLSearchParams({
          query: q,
          start: String(BigInt(now - 24 * 3_600_000) * 1_000_000n),
          end: String(BigInt(now + 60_000) * 1_000_000n),
          step: '300',
          limit: '1000',
        });
        let body: { data: { resultType: string; result: unknown[] } } | undefined;
        // Loki answers queries only once its ingester is ready and has the pushed entries in memory
        for (let i = 0; ; i++) {
          const r = await fetch(`${loki.url}/loki/api/v1/query_range?${params}`, { signal: AbortSignal.timeout(30_000) });
          const text = await r.text();
          assert.equal(r.status, 200, `${title}: HTTP ${r.status}: ${text.slice(0, 500)}\n${q}`);
          body = JSON.parse(text);
          if (body!.data.result.length > 0 || i >= 20 || /pressure/i.test(title) || title.startsWith('variable')) break;
          await new Promise((res) => setTimeout(res, 250));
        }
        if (!/pressure/i.test(title)) assert.ok(body!.data.result.length > 0, `${title}: no data\n${q}`);
      });
    }
  });

  describe('ClickHouse panels on the production schema (chdb)', () => {
    let ch: ServerHandle;
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-grafana-'));
    const now = Date.now();
    before(async () => {
      ch = await startChdb({ dir: path.join(base, 'chdb') });
      await sql(ch, 'CREATE DATABASE IF NOT EXISTS oomtrail');
      for (const m of MIGRATIONS) for (const stmt of m.statements({ database: 'oomtrail', table: 'oom_kills', ttlDays: 365 })) await sql(ch, stmt);
      await sql(ch, 'INSERT INTO oomtrail.oom_kills FORMAT JSONEachRow', {
        data: encodeBatch(cookbookRecords(now)),
        settings: { input_format_skip_unknown_fields: 1 },
      });
    });
    after(async () => {
      await ch?.stop();
      fs.rmSync(base, { recursive: true, force: true });
    });

    const fromS = Math.floor((now - 24 * 3_600_000) / 1000);
    const toS = Math.ceil(now / 1000) + 60;
    for (const p of chPanels) {
      test(`SQL runs: ${p.title}`, async () => {
        const total = (await rows<{ n: number }>(ch, 'SELECT count() AS n FROM oomtrail.oom_kills'))[0].n;
        assert.ok(total > 0, 'sample records inserted');
        for (const t of p.targets) {
          const q = interpolateSql(t.rawSql, fromS, toS);
          assert.doesNotMatch(q, /\$[\w{]/, `uninterpolated macro in ${q}`);
          const out = await rows(ch, q);
          // every panel has something to show over the cookbook's last 24 h except possibly restart loops
          if (p.title !== 'Repeat offenders (restart loops)') assert.ok(out.length > 0, `${p.title}: no rows\n${q}`);
        }
      });
    }
  });
});
