/*
 * The docs that are generated from the code: `npm run docs` (build, then `node dist/scripts/gen-docs.js`) rewrites
 *   - docs/config.md, every configuration key (from the convict schema: key, env var, default, type, doc);
 *   - the metrics table of docs/metrics.md (from the metrics registry: name, type, labels, help);
 *   - the DDL of docs/queries.md for `create_schema: false` (migration 1 with every later migration folded in).
 * Each generated part sits between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->` (config.md is
 * generated whole). test/unit/docs.test.ts regenerates them in memory and fails when a file differs;
 * `node dist/scripts/gen-docs.js --check` does the same from the command line (exit 1).
 */
import fs from 'node:fs';
import path from 'node:path';
import { schema } from '../src/config/schema';
import { MetricsRegistry, PipelineMetrics } from '../src/observe/metrics';
import { MIGRATIONS, tableRef, type SchemaOptions } from '../src/sinks/clickhouse/schema';

export const REPO = path.resolve(__dirname, '..', '..');
export const REGENERATE = 'npm run docs';

// ---- generated blocks inside hand-written files -------------------------------------------------------------------

const begin = (name: string): string => `<!-- generated: ${name} (${REGENERATE}; do not edit by hand) -->`;
const end = (name: string): string => `<!-- end generated: ${name} -->`;

/** The text between the markers of block `name` (markers excluded); throws when the markers are missing. */
export function generatedBlock(text: string, name: string, file = 'the file'): string {
  const a = text.indexOf(begin(name));
  const b = text.indexOf(end(name));
  if (a < 0 || b < a) throw new Error(`${file} lacks the markers of the generated block "${name}": ${begin(name)} … ${end(name)}`);
  return text.slice(a + begin(name).length, b);
}

export function replaceBlock(text: string, name: string, content: string, file = 'the file'): string {
  generatedBlock(text, name, file);
  const a = text.indexOf(begin(name)) + begin(name).length;
  return text.slice(0, a) + content + text.slice(text.indexOf(end(name)));
}

// ---- ClickHouse: the latest schema as one CREATE TABLE ----------------------------------------------------------------

const ADD = 'ADD COLUMN IF NOT EXISTS ';

/**
 * Migration 1's CREATE TABLE with the columns of every later migration added where `ALTER … ADD COLUMN` puts them
 * (after the last column), each migration's columns under a comment: the table `create_schema: true` ends with.
 * A migration that does anything but add columns cannot be folded in: this throws, naming it.
 */
export function latestTableSql(o: SchemaOptions): string {
  const [first, ...rest] = [...MIGRATIONS].sort((a, b) => a.version - b.version);
  const create = first!.statements(o);
  if (create.length !== 1 || !create[0]!.startsWith('CREATE TABLE')) throw new Error('migration 1 is not one CREATE TABLE');
  const lines = create[0]!.split('\n');
  const firstIndex = lines.findIndex((l) => /^\s+INDEX /.test(l));
  if (firstIndex < 0) throw new Error('migration 1 has no INDEX line to insert columns before');
  const column = /^\s+(`[^`]+`)\s+(.+),$/;
  const added: string[] = [];
  for (const m of rest) {
    added.push(`    -- migration ${m.version}: ${m.description}`);
    for (const sql of m.statements(o)) {
      const prefix = `ALTER TABLE ${tableRef(o)} ${ADD}`;
      if (!sql.startsWith(prefix)) throw new Error(`migration ${m.version} does more than add columns; extend latestTableSql: ${sql.slice(0, 120)}`);
      for (const def of sql.slice(prefix.length).split(`, ${ADD}`)) added.push(`    ${def},`);
    }
  }
  const body = [...lines.slice(0, firstIndex), ...added, ...lines.slice(firstIndex)];
  // one column width for every column line, old and new
  const width = Math.max(...body.map((l) => column.exec(l)?.[1]!.length ?? 0));
  return body.map((l) => {
    const c = column.exec(l);
    return c ? `    ${c[1]!.padEnd(width)} ${c[2]},` : l;
  }).join('\n');
}

/** The block of docs/queries.md: the DDL with the sink's default database, table and TTL. */
export function queriesDdlBlock(): string {
  return `\n\n\`\`\`sql\n${latestTableSql({ database: 'oomtrail', table: 'oom_kills', ttlDays: 365 })}\n\`\`\`\n\n`;
}

/** The one `CREATE TABLE` block of docs/queries.md (what a reader copies for create_schema: false). */
export function queriesDocDdl(text: string): string {
  const blocks = [...text.matchAll(/```sql\n(CREATE TABLE[\s\S]*?)\n```/g)].map((m) => m[1]!);
  if (blocks.length !== 1) throw new Error(`docs/queries.md has ${blocks.length} CREATE TABLE blocks, not one`);
  return blocks[0]!;
}

/** The cookbook of docs/queries.md: each ```sql block that starts with `-- query: NAME`. */
export function queriesCookbook(text: string): Map<string, string> {
  return new Map([...text.matchAll(/```sql\n-- query: (\w+)\n([\s\S]*?)```/g)].map((m) => [m[1]!, m[2]!.trim()]));
}

// ---- metrics --------------------------------------------------------------------------------------------------------

export interface MetricDoc {
  name: string;
  type: 'counter' | 'gauge';
  labels: string[];
  help: string;
}

/** Every series the agent registers (the registry of a fresh agent, `PipelineMetrics`). */
export function registryMetrics(): MetricDoc[] {
  const registry = new MetricsRegistry();
  new PipelineMetrics(registry);
  return registry.list().map((m) => ({ name: m.name, type: m.type, labels: [...m.labelNames], help: m.help }));
}

const cell = (s: string): string => s.replace(/\r?\n/g, ' ').replace(/\|/g, '\\|');

export function metricsTableBlock(metrics = registryMetrics()): string {
  const rows = metrics.map((m) => `| \`${m.name}\` | ${m.type} | ${m.labels.map((l) => `\`${l}\``).join(', ') || '—'} | ${cell(m.help)} |`);
  return `\n\n| metric | type | labels | meaning |\n|---|---|---|---|\n${rows.join('\n')}\n\n`;
}

/** The rows of the metrics table in a doc: what a reader sees, parsed back. */
export function parseMetricsTable(text: string): MetricDoc[] {
  const out: MetricDoc[] = [];
  for (const line of text.split('\n')) {
    const m = /^\| `(oomtrail_[a-z0-9_]+)` \| (counter|gauge) \| ([^|]*) \| (.*) \|$/.exec(line);
    if (!m) continue;
    const labels = m[3]!.trim() === '—' ? [] : [...m[3]!.matchAll(/`([a-z_]+)`/g)].map((x) => x[1]!);
    out.push({ name: m[1]!, type: m[2] as MetricDoc['type'], labels, help: m[4]! });
  }
  return out;
}

// ---- configuration reference ----------------------------------------------------------------------------------------

export interface ConfigKeyDoc {
  key: string;
  env: string;
  default: unknown;
  type: string;
  doc: string;
  sensitive: boolean;
}

const FORMAT_NAMES: Record<string, string> = {
  natural: 'integer ≥ 0',
  positive: 'integer > 0',
  ratio: 'number in (0, 1]',
  percent: 'number in [0, 100]',
  psiWindowUs: 'integer, 500000–10000000',
  emptyOrAbsolutePath: "'' or an absolute path",
  nonEmptyString: 'non-empty string',
  noControl: 'string',
  listenAddress: "'' or host:port",
};

function typeOf(prop: Record<string, unknown>): string {
  const f = prop.format;
  const attached = typeof f === 'function' ? (f as unknown as { values?: unknown }).values : undefined;
  const values = Array.isArray(f) ? f : Array.isArray(attached) ? attached : null;
  if (values) return `one of ${values.map((v) => `\`${String(v)}\``).join(', ')}`;
  if (f === Boolean) return 'boolean';
  if (typeof f === 'function' && FORMAT_NAMES[f.name]) return FORMAT_NAMES[f.name]!;
  const d = prop.default;
  return typeof d === 'number' ? 'number' : typeof d === 'boolean' ? 'boolean' : typeof d === 'string' ? 'string' : 'list';
}

/** Every leaf of the convict schema, in schema order. */
export function configKeys(node: Record<string, unknown> = schema as Record<string, unknown>, prefix = ''): ConfigKeyDoc[] {
  const out: ConfigKeyDoc[] = [];
  for (const [name, child] of Object.entries(node)) {
    const key = prefix ? `${prefix}.${name}` : name;
    const c = child as Record<string, unknown>;
    if (c && typeof c === 'object' && !Array.isArray(c) && !('default' in c)) {
      out.push(...configKeys(c, key));
      continue;
    }
    out.push({ key, env: String(c.env ?? ''), default: c.default, type: typeOf(c), doc: String(c.doc ?? ''), sensitive: c.sensitive === true });
  }
  return out;
}

const showDefault = (v: unknown): string => (v === '' ? "`''`" : `\`${typeof v === 'string' ? v : JSON.stringify(v)}\``);

export function configReference(keys = configKeys()): string {
  const groups = new Map<string, ConfigKeyDoc[]>();
  for (const k of keys) {
    const parent = k.key.slice(0, k.key.lastIndexOf('.'));
    groups.set(parent, [...(groups.get(parent) ?? []), k]);
  }
  const out = [
    '# Configuration reference',
    '',
    `Generated from the configuration schema (\`src/config/schema.ts\` and each sink's \`src/sinks/<name>/config.ts\`) by`,
    `\`${REGENERATE}\`; do not edit by hand (\`test/unit/docs.test.ts\` fails when this page and the schema differ).`,
    '',
    'Every key has a default (below), can be set in the config file (`--config FILE`, else',
    '`/etc/oomtrail/config.yaml`, `config.yml` or `config.json`) and by its environment variable, which wins over',
    'the file. `config/default.yaml` holds every key with its default and a comment. Unknown keys, unknown',
    '`OOMTRAIL_*` variables and bad values are refused (exit 78). Keys marked *secret* never have their value printed.',
    '',
    `${keys.length} keys in ${groups.size} sections:`,
    '',
    [...groups.keys()].map((g) => `[\`${g}\`](#${g.replace(/\./g, '')})`).join(' · '),
  ];
  for (const [group, ks] of groups) {
    out.push('', `## ${group}`, '', '| key | env | default | type | meaning |', '|---|---|---|---|---|');
    for (const k of ks) {
      const type = k.sensitive ? `${k.type}, *secret*` : k.type;
      out.push(`| \`${k.key}\` | \`${k.env}\` | ${showDefault(k.default)} | ${cell(type)} | ${cell(k.doc)} |`);
    }
  }
  return out.join('\n') + '\n';
}

/** The rows of docs/config.md, parsed back: key → env, default cell, doc cell. */
export function parseConfigReference(text: string): Map<string, { env: string; default: string; doc: string }> {
  const out = new Map<string, { env: string; default: string; doc: string }>();
  for (const line of text.split('\n')) {
    const m = /^\| `([a-z0-9_.]+)` \| `([A-Z0-9_]+)` \| (.*?) \| .*? \| (.*) \|$/.exec(line);
    if (m) out.set(m[1]!, { env: m[2]!, default: m[3]!, doc: m[4]! });
  }
  return out;
}

// ---- all generated files ----------------------------------------------------------------------------------------------

export interface GeneratedFile {
  /** Repository-relative. */
  file: string;
  /** The file as it is now ('' when missing). */
  current: string;
  /** The file as `npm run docs` writes it. */
  wanted: string;
}

export function generatedFiles(root = REPO): GeneratedFile[] {
  const read = (f: string): string => {
    try {
      return fs.readFileSync(path.join(root, f), 'utf8');
    } catch {
      return '';
    }
  };
  const queries = read('docs/queries.md');
  const metrics = read('docs/metrics.md');
  return [
    { file: 'docs/config.md', current: read('docs/config.md'), wanted: configReference() },
    { file: 'docs/metrics.md', current: metrics, wanted: replaceBlock(metrics, 'metrics', metricsTableBlock(), 'docs/metrics.md') },
    { file: 'docs/queries.md', current: queries, wanted: replaceBlock(queries, 'ddl', queriesDdlBlock(), 'docs/queries.md') },
  ];
}

if (require.main === module) {
  const check = process.argv.includes('--check');
  const stale = generatedFiles().filter((g) => g.current !== g.wanted);
  for (const g of stale) {
    if (check) console.error(`${g.file} is out of date: run ${REGENERATE}`);
    else {
      fs.writeFileSync(path.join(REPO, g.file), g.wanted);
      console.log(`wrote ${g.file}`);
    }
  }
  if (stale.length === 0) console.log('docs up to date');
  process.exitCode = check && stale.length > 0 ? 1 : 0;
}
