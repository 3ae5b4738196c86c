/**
 * The production schema and its versions.
 *
 * One row per OOM victim. Engine ReplacingMergeTree: a record delivered twice (a retry whose first attempt
 * did commit, a spool replay after a crash) is the identical row with the identical sorting key, so merges
 * keep one; `FINAL` (or `LIMIT 1 BY event_id`) gives exact answers before a merge. On top of that every
 * synchronous insert carries an `insert_deduplication_token` (see encoder.ts), and the table keeps the
 * hashes of its last 1000 inserts (`non_replicated_deduplication_window`), so a retried batch is dropped at
 * insert time and even plain `count()` is exact for retries.
 *
 * Versioning: `<database>.oomtrail_schema_migrations` holds one row per applied version per table. An agent
 * applies the versions it knows and the table lacks, in order; every statement is idempotent (`IF NOT
 * EXISTS`), so agents starting together are harmless. A newer agent adds a migration (e.g. `ALTER TABLE …
 * ADD COLUMN IF NOT EXISTS …`); an older agent keeps inserting the columns it knows (JSONEachRow by name,
 * new columns take their defaults). Migration 1's DDL is frozen: never edit it, add a migration.
 */

export const MIGRATIONS_TABLE = 'oomtrail_schema_migrations';

export interface SchemaOptions {
  database: string;
  table: string;
  /** 0 = no TTL. */
  ttlDays: number;
}

export interface Migration {
  version: number;
  description: string;
  statements: (o: SchemaOptions) => string[];
}

export const q = (ident: string): string => '`' + ident.replace(/\\/g, '\\\\').replace(/`/g, '\\`') + '`';
export const lit = (s: string): string => "'" + s.replace(/\\/g, '\\\\').replace(/'/g, "\\'") + "'";
export const tableRef = (o: { database: string; table: string }): string => `${q(o.database)}.${q(o.table)}`;

/** Migration 1: the table. Sorting key (host, victim_cgroup, time, event_id) serves "per host / per container over time". */
export function createTableSql(o: SchemaOptions): string {
  const ttl = o.ttlDays > 0 ? `\nTTL toDateTime(time) + INTERVAL ${Math.floor(o.ttlDays)} DAY` : '';
  return `CREATE TABLE IF NOT EXISTS ${tableRef(o)}
(
    \`time\`                 DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    \`event_id\`             String CODEC(ZSTD(1)),
    \`schema_version\`       UInt16,
    \`host\`                 LowCardinality(String),
    \`boot_id\`              String CODEC(ZSTD(1)),
    \`kernel_release\`       LowCardinality(String),
    \`hook\`                 LowCardinality(String),
    \`victim_pid\`           UInt32,
    \`victim_tid\`           UInt32,
    \`victim_comm\`          LowCardinality(String),
    \`victim_uid\`           Nullable(UInt32),
    \`victim_total_vm_kb\`   Nullable(UInt64),
    \`victim_anon_rss_kb\`   Nullable(UInt64),
    \`victim_file_rss_kb\`   Nullable(UInt64),
    \`victim_shmem_rss_kb\`  Nullable(UInt64),
    \`victim_pgtables_kb\`   Nullable(UInt64),
    \`victim_oom_score_adj\` Nullable(Int16),
    \`trigger_pid\`          UInt32,
    \`trigger_comm\`         LowCardinality(String),
    \`constraint\`           LowCardinality(String),
    \`constraint_inferred\`  Bool,
    \`oom_cgroup\`           String CODEC(ZSTD(1)),
    \`victim_cgroup\`        String CODEC(ZSTD(1)),
    \`cgroup_version\`       Nullable(UInt8),
    \`memcg_limit_bytes\`    Nullable(UInt64),
    \`memcg_usage_bytes\`    Nullable(UInt64),
    \`domain_pages\`         Nullable(UInt64),
    \`gfp_mask\`             LowCardinality(Nullable(String)),
    \`order\`                Nullable(Int16),
    \`container_id\`         String CODEC(ZSTD(1)),
    \`container_runtime\`    LowCardinality(String),
    \`pod_uid\`              String CODEC(ZSTD(1)),
    \`k8s_qos\`              LowCardinality(String),
    \`agent_version\`        LowCardinality(String),
    INDEX idx_event_id event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_container_id container_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_pod_uid pod_uid TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (host, victim_cgroup, time, event_id)${ttl}
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000`;
}

/**
 * Migration 2: the memory trail's fields. `trail` and `pressure` are kept as the record's JSON (a
 * String column, ZSTD) rather than ~12 Array columns: one row per event still, no join, the shape can
 * grow without a migration, and JSONExtract reads any series back (docs/queries.md plots one).
 */
export function addTrailColumnsSql(o: SchemaOptions): string[] {
  return [
    `ALTER TABLE ${tableRef(o)} ADD COLUMN IF NOT EXISTS \`kind\` LowCardinality(String) DEFAULT 'oom_kill'`,
    `ALTER TABLE ${tableRef(o)} ADD COLUMN IF NOT EXISTS \`victim_exit_latency_ms\` Nullable(Float64)`,
    `ALTER TABLE ${tableRef(o)} ADD COLUMN IF NOT EXISTS \`victim_reaped_latency_ms\` Nullable(Float64)`,
    `ALTER TABLE ${tableRef(o)} ADD COLUMN IF NOT EXISTS \`trail\` String DEFAULT '' CODEC(ZSTD(3))`,
    `ALTER TABLE ${tableRef(o)} ADD COLUMN IF NOT EXISTS \`pressure\` String DEFAULT '' CODEC(ZSTD(3))`,
  ];
}

/**
 * Migration 3: who the victim was, from the container runtime, and whether it was its container's init.
 * Backfill-safe: every column has a default, so rows written before read '' / NULL (= not known). Pod and
 * container names are per-instance (high cardinality): plain String; namespaces, container names in a pod
 * spec and images repeat: LowCardinality. `labels` is the allow-listed map as its JSON text (no Map type
 * before ClickHouse 21.1; JSONExtractString(labels, 'team') reads one).
 */
export function addRuntimeColumnsSql(o: SchemaOptions): string[] {
  const t = tableRef(o);
  return [
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`victim_ns_pid\` Nullable(UInt32)`,
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`victim_is_container_init\` Nullable(Bool)`,
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`container_name\` String DEFAULT '' CODEC(ZSTD(1))`,
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`container_image\` LowCardinality(String) DEFAULT ''`,
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`pod_name\` String DEFAULT '' CODEC(ZSTD(1))`,
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`pod_namespace\` LowCardinality(String) DEFAULT ''`,
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`k8s_container\` LowCardinality(String) DEFAULT ''`,
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`labels\` String DEFAULT '' CODEC(ZSTD(3))`,
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`oom_group_kill\` Nullable(Bool)`,
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS \`oom_group_kill_size\` Nullable(UInt32)`,
  ];
}

/** memory_at_kill's byte values, one typed column each (`at_kill_<name>`), for the cookbook's arithmetic. */
export const AT_KILL_COLUMNS = [
  'usage_bytes',
  'limit_bytes',
  'failcnt',
  'anon_bytes',
  'file_bytes',
  'shmem_bytes',
  'file_mapped_bytes',
  'file_dirty_bytes',
  'file_writeback_bytes',
  'kernel_bytes',
  'slab_bytes',
  'sock_bytes',
  'pagetables_bytes',
  'swap_bytes',
] as const;

/**
 * Migration 4: "why this kill". The breakdown as typed Nullable(UInt64) columns (`at_kill_*`) plus
 * `at_kill_source` ('' = the record carried no such field, '-' = it was null) and `at_kill_scope`;
 * `cause` and `victim_share` typed; `candidates` as the record's JSON (a String, like `trail`: a list
 * of up to N objects whose shape may grow; JSONExtract reads it back).
 */
export function addExplainColumnsSql(o: SchemaOptions): string[] {
  // one ALTER with every column: one round trip and one metadata change instead of 19
  const cols = [
    "`at_kill_source` LowCardinality(String) DEFAULT ''",
    "`at_kill_scope` LowCardinality(String) DEFAULT ''",
    ...AT_KILL_COLUMNS.map((c) => `\`at_kill_${c}\` Nullable(UInt64)`),
    '`cause` LowCardinality(Nullable(String))',
    '`victim_share` Nullable(Float64)',
    "`candidates` String DEFAULT '' CODEC(ZSTD(3))",
  ];
  return [`ALTER TABLE ${tableRef(o)} ${cols.map((c) => `ADD COLUMN IF NOT EXISTS ${c}`).join(', ')}`];
}

/**
 * Migration 5: `candidates_source` ('kmsg': the kernel's printed table; 'procfs': read from /proc right
 * after the kill; '-': the record's field was null; '': the record had no such field).
 */
export function addCandidatesSourceSql(o: SchemaOptions): string[] {
  return [`ALTER TABLE ${tableRef(o)} ADD COLUMN IF NOT EXISTS \`candidates_source\` LowCardinality(String) DEFAULT ''`];
}

/**
 * Migration 6: which limit was hit (`oom_scope`) and the pod's workload (`workload_kind`, `workload_name`; then only
 * guessed from the pod name, see migration 7). '' = the record did not carry the field (rows from before, or unknown). All three repeat:
 * LowCardinality.
 */
export function addScopeColumnsSql(o: SchemaOptions): string[] {
  const cols = ['oom_scope', 'workload_kind', 'workload_name'].map((c) => `ADD COLUMN IF NOT EXISTS \`${c}\` LowCardinality(String) DEFAULT ''`);
  return [`ALTER TABLE ${tableRef(o)} ${cols.join(', ')}`];
}

/** Migration 7: where workload_kind/workload_name came from (`api`: owner references; `name`: the pod name). */
export function addWorkloadSourceSql(o: SchemaOptions): string[] {
  return [`ALTER TABLE ${tableRef(o)} ADD COLUMN IF NOT EXISTS \`workload_source\` LowCardinality(String) DEFAULT ''`];
}

export const MIGRATIONS: readonly Migration[] = Object.freeze([
  { version: 1, description: 'oom_kills: one row per OOM victim', statements: (o: SchemaOptions) => [createTableSql(o)] },
  { version: 2, description: 'memory trail: kind, exit/reap latency, trail and pressure as JSON', statements: addTrailColumnsSql },
  { version: 3, description: 'runtime names: container/pod names, image, labels; victim ns pid, container init, group kill', statements: addRuntimeColumnsSql },
  { version: 4, description: 'why this kill: memory at kill (typed), cause, victim_share, candidates as JSON', statements: addExplainColumnsSql },
  { version: 5, description: 'candidates_source: the printed table (kmsg) or /proc read right after the kill (procfs)', statements: addCandidatesSourceSql },
  { version: 6, description: 'oom_scope (which limit was hit), workload_kind and workload_name (from the pod name)', statements: addScopeColumnsSql },
  { version: 7, description: 'workload_source: workload_kind/workload_name from the API (api) or the pod name (name)', statements: addWorkloadSourceSql },
]);

export function createMigrationsTableSql(database: string): string {
  return `CREATE TABLE IF NOT EXISTS ${q(database)}.${q(MIGRATIONS_TABLE)}
(
    \`table\`         String,
    \`version\`       UInt32,
    \`description\`   String,
    \`agent_version\` String,
    \`applied_at\`    DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY (\`table\`, \`version\`)`;
}

/** What the migration runner needs from a client: run a statement, run a query returning text. */
export interface SqlRunner {
  command(sql: string): Promise<void>;
  text(sql: string): Promise<string>;
}

export interface MigrationResult {
  /** Highest version recorded before this run (0: none). */
  before: number;
  /** Versions applied by this run. */
  applied: number[];
  /** Highest version recorded after this run; may exceed the agent's own when a newer agent migrated. */
  after: number;
  /** The table was missing although versions were recorded (dropped by hand): every migration ran again. */
  recreated: boolean;
}

/**
 * Creates the database and the migrations table, then applies the migrations the table lacks, in order, recording
 * each. Idempotent; safe to run from many agents at once.
 */
export async function migrate(
  run: SqlRunner,
  o: SchemaOptions,
  agentVersion: string,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<MigrationResult> {
  await run.command(`CREATE DATABASE IF NOT EXISTS ${q(o.database)}`);
  await run.command(createMigrationsTableSql(o.database));
  const before = Number(
    (await run.text(`SELECT max(version) FROM ${q(o.database)}.${q(MIGRATIONS_TABLE)} WHERE \`table\` = ${lit(o.table)}`)).trim() || 0,
  );
  const exists = (await run.text(`EXISTS TABLE ${tableRef(o)}`)).trim() === '1';
  const recreated = before > 0 && !exists;
  const from = recreated ? 0 : before;
  const applied: number[] = [];
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (m.version <= from) continue;
    for (const sql of m.statements(o)) await run.command(sql);
    await run.command(
      `INSERT INTO ${q(o.database)}.${q(MIGRATIONS_TABLE)} (\`table\`, \`version\`, \`description\`, \`agent_version\`) VALUES (${lit(o.table)}, ${m.version}, ${lit(m.description)}, ${lit(agentVersion)})`,
    );
    applied.push(m.version);
  }
  const after = Math.max(before, ...applied, 0);
  return { before, applied, after, recreated };
}
