import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import convict from 'convict';
import yaml from 'js-yaml';
import { ConfigError, type ConfigProblem } from './errors';
import { redactUrl } from './formats';
import { readRegularFile } from '../host/paths';
import { crossCheck, schema as appSchema, type AppConfig } from './schema';

/**
 * Configuration loading: schema defaults ← one file ← `OOMTRAIL_*` environment variables.
 *
 * - File: the explicit `--config FILE` (must exist and be readable), otherwise the first of
 *   `<etcDir>/config.yaml|config.yml|config.json` that exists (two of them at once is an error: editing the one
 *   that is silently ignored is a classic trap). `.json` is parsed as JSON, anything else as YAML (core schema:
 *   no dates, duplicate keys rejected). An empty file sets nothing.
 * - Environment: each key's `env` name from the schema. Convict's own env import is switched off because its
 *   coercion is lossy (`"12abc"` → 12, any boolean text but `"false"` → true); values are coerced here strictly,
 *   and a bad one is reported with the variable's name. Any other `OOMTRAIL_*` variable is an error (a typo such
 *   as `OOMTRAIL_SINKS_FILE_PAHT` would otherwise be ignored in silence), except those starting with one of
 *   `NON_CONFIG_ENV_PREFIXES`: the project's own test, VM, cache and Grafana variables.
 * - Validation: unknown keys, wrong types and bad values in the file are collected first (naming key and file);
 *   then convict validates the merged result with `allowed: 'strict'`, each problem traced back to the file or
 *   env var that set it. Every problem is reported at once in one `ConfigError`.
 * - Secrets: values of `sensitive: true` keys never appear in a message; unknown keys never print their value
 *   (a misspelt password key is still a password), and parse errors never quote the file's text.
 */

export { ConfigError, type ConfigErrorCode, type ConfigProblem } from './errors';
export { redactUrl } from './formats';

export const DEFAULT_ETC_DIR = '/etc/oomtrail';
export const CONFIG_FILE_NAMES: readonly string[] = ['config.yaml', 'config.yml', 'config.json'];
export const ENV_PREFIX = 'OOMTRAIL_';
/**
 * `OOMTRAIL_*` names that are not configuration, so never refused: test knobs (`OOMTRAIL_E2E_BURST`,
 * `OOMTRAIL_TEST_VERBOSE`, `OOMTRAIL_LOKI_BURST`), the VM matrix (`OOMTRAIL_VM_*`, `OOMTRAIL_SKIP_VM`), the
 * Kubernetes files (`OOMTRAIL_K8S=0 npm test`, `OOMTRAIL_K8S_OUTAGE_MS`), the test-server cache (`OOMTRAIL_CACHE`)
 * and Grafana's provisioning (`OOMTRAIL_GRAFANA_*`). Configuration keys
 * never start with these (a test in config.test.ts checks it).
 */
export const NON_CONFIG_ENV_PREFIXES: readonly string[] = [
  'OOMTRAIL_E2E_',
  'OOMTRAIL_TEST_',
  'OOMTRAIL_VM_',
  'OOMTRAIL_SKIP_',
  'OOMTRAIL_CACHE',
  'OOMTRAIL_GRAFANA_',
  'OOMTRAIL_LOKI_BURST',
  'OOMTRAIL_K8S',
];

export interface LoadOptions {
  /** `--config FILE`: must exist and be readable; the etcDir lookup is skipped. */
  file?: string;
  /** Where the `OOMTRAIL_*` overrides are read from; `process.env` when absent. */
  env?: NodeJS.ProcessEnv;
  /** Directory searched for config.yaml / config.yml / config.json when no file is given. */
  etcDir?: string;
}

export interface LoadResult<T> {
  /** Deep-frozen. */
  config: T;
  /** Where values came from, in order of precedence: `defaults`, then the file path, then `env NAME` each. */
  sources: string[];
  /** Non-fatal findings for the caller to log (none at present: an unknown `OOMTRAIL_*` variable is an error). */
  warnings: string[];
  /** Where a key's value came from: `env OOMTRAIL_…`, `file /etc/oomtrail/config.yaml` or `default`. */
  originOf: OriginOf;
}

export type OriginOf = (key: string) => string;

/**
 * A problem found after loading (a sink's files, the spool dir, a cross-key check) with the source of its key
 * put in front, `env OOMTRAIL_… : key: reason`, and the sources of the related keys that were set after it: the
 * operator learns where to fix it. Problems already naming a source, or no key, are kept as they are.
 */
export function attributeProblem(p: ConfigProblem, originOf: OriginOf): ConfigProblem {
  if (p.key === undefined || p.env !== undefined || p.file !== undefined) return p;
  const origin = originOf(p.key);
  // already attributed (a default's problem carries no env or file to tell): the pre-flight's, seen again by run's catch
  if (p.message.startsWith(`${origin}: ${p.key}: `)) return p;
  const set = (p.related ?? []).map((k) => [k, originOf(k)] as const).filter(([, o]) => o !== 'default');
  const note = set.length ? ` (${set.map(([k, o]) => `${k} from ${o}`).join(', ')})` : '';
  const body = p.message.startsWith(`${p.key}: `) ? p.message : `${p.key}: ${p.message}`;
  return { ...p, ...originFieldsOf(origin), message: `${origin}: ${body}${note}` };
}

/** The same for every problem of a ConfigError. */
export function attributeError(err: ConfigError, originOf: OriginOf): ConfigError {
  return new ConfigError(err.problems.map((p) => attributeProblem(p, originOf)));
}

function originFieldsOf(origin: string): { file?: string; env?: string } {
  if (origin.startsWith('env ')) return { env: origin.slice(4) };
  if (origin.startsWith('file ')) return { file: origin.slice(5) };
  return {};
}

/** Load the agent configuration. Throws `ConfigError`. */
export function loadConfig(opts: LoadOptions = {}): LoadResult<AppConfig> {
  return loadConfigWithSchema(appSchema, { ...opts, check: crossCheck });
}

/** The host name to put in records: `host.name`, or the kernel's when it is ''. */
export function effectiveHostName(config: AppConfig): string {
  return config.host.name || os.hostname();
}

// ---- the generic loader (any convict schema; the sinks' parts are assembled in schema.ts from their registry) ----

type Kind = 'number' | 'boolean' | 'string' | 'other';

interface Leaf {
  path: string;
  env?: string;
  sensitive: boolean;
  kind: Kind;
}

type Origin = { file: string } | { env: string };

export interface GenericLoadOptions<T> extends LoadOptions {
  /** Prefix of the env vars the schema uses; unknown ones with it are errors. Default `OOMTRAIL_`. */
  envPrefix?: string;
  /** Names with the prefix that are not configuration and are never checked. Default `NON_CONFIG_ENV_PREFIXES`. */
  ignoreEnvPrefixes?: readonly string[];
  /** Cross-key checks run on the validated config. */
  check?: (config: T) => Array<{ key: string; message: string; related?: string[] }>;
}

export function loadConfigWithSchema<T>(schema: convict.Schema<T>, opts: GenericLoadOptions<T> = {}): LoadResult<T> {
  const env = opts.env ?? process.env;
  const envPrefix = opts.envPrefix ?? ENV_PREFIX;
  const { leaves, sections } = describeSchema(schema as Record<string, unknown>);
  const problems: ConfigProblem[] = [];
  const warnings: string[] = [];
  const sources = ['defaults'];
  const assignments: Array<[key: string, value: unknown, origin: Origin]> = [];

  // 1. The file.
  const file = opts.file !== undefined ? explicitFile(opts.file) : findDefaultFile(opts.etcDir ?? DEFAULT_ETC_DIR);
  if (file !== undefined) {
    const parsed = parseFile(file, readFile(file));
    sources.push(file);
    for (const [key, value] of collectFileValues(parsed, file, leaves, sections, problems)) {
      assignments.push([key, value, { file }]);
    }
  }

  // 2. The environment.
  const envNames = new Map<string, Leaf>();
  for (const leaf of leaves.values()) if (leaf.env) envNames.set(leaf.env, leaf);
  for (const [name, leaf] of envNames) {
    const raw = env[name];
    if (raw === undefined) continue;
    const coerced = coerceEnv(leaf, raw);
    if ('error' in coerced) {
      const shown = leaf.sensitive ? '' : `, got ${JSON.stringify(clip(raw))}`;
      problems.push({
        code: 'CONFIG_INVALID',
        key: leaf.path,
        env: name,
        message: `env ${name}: ${leaf.path}: ${coerced.error}${shown}`,
      });
      continue;
    }
    sources.push(`env ${name}`);
    assignments.push([leaf.path, coerced.value, { env: name }]);
  }
  const ignored = opts.ignoreEnvPrefixes ?? NON_CONFIG_ENV_PREFIXES;
  for (const name of Object.keys(env).sort()) {
    if (name.startsWith(envPrefix) && !envNames.has(name) && !ignored.some((p) => name.startsWith(p))) {
      const hint = suggest(name, [...envNames.keys()]);
      problems.push({
        code: 'CONFIG_UNKNOWN_KEY',
        env: name,
        message: `env ${name} is not a configuration variable${hint ? ` (did you mean ${hint}?)` : ''}`,
      });
    }
  }

  // 3. Convict: defaults + assignments, strict validation, each failure traced to its source.
  const config = convict(schema, { env: {}, args: [] });
  const setter = config as unknown as { set(key: string, value: unknown): void };
  const origins = new Map<string, Origin>();
  for (const [key, value, origin] of assignments) {
    setter.set(key, value);
    origins.set(key, origin);
  }
  try {
    config.validate({ allowed: 'strict', output: () => undefined });
  } catch (err) {
    for (const line of String((err as Error).message).split('\n')) {
      if (line.trim()) problems.push(convictProblem(line, origins));
    }
  }

  const values = config.getProperties() as T;
  const originOf: OriginOf = (key) => where(origins.get(key));
  if (problems.length === 0 && opts.check) {
    for (const { key, message, related } of opts.check(values)) {
      problems.push(attributeProblem({ code: 'CONFIG_INVALID', key, message, ...(related ? { related } : {}) }, originOf));
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { config: deepFreeze(values), sources, warnings, originOf };
}

// ---- schema introspection --------------------------------------------------------------------------------------

function describeSchema(schema: Record<string, unknown>): { leaves: Map<string, Leaf>; sections: Set<string> } {
  const leaves = new Map<string, Leaf>();
  const sections = new Set<string>();
  const walk = (node: Record<string, unknown>, prefix: string): void => {
    for (const [name, child] of Object.entries(node)) {
      const p = prefix ? `${prefix}.${name}` : name;
      if (isPlainObject(child) && !('default' in child) && Object.keys(child).length > 0) {
        sections.add(p);
        walk(child, p);
        continue;
      }
      // A property: `{ default, format, env, … }`, or convict's shorthand `key: defaultValue`.
      const prop = isPlainObject(child) && 'default' in child ? child : { default: child };
      const def = prop.default;
      const kind: Kind =
        typeof def === 'number' ? 'number' : typeof def === 'boolean' ? 'boolean' : typeof def === 'string' ? 'string' : 'other';
      const leaf: Leaf = { path: p, sensitive: prop.sensitive === true, kind };
      if (typeof prop.env === 'string') leaf.env = prop.env;
      leaves.set(p, leaf);
    }
  };
  walk(schema, '');
  return { leaves, sections };
}

// ---- the file --------------------------------------------------------------------------------------------------

function explicitFile(file: string): string {
  if (file.trim() === '') {
    throw new ConfigError([{ code: 'CONFIG_UNREADABLE', message: 'config file: the path is empty' }]);
  }
  return path.resolve(file);
}

function findDefaultFile(dir: string): string | undefined {
  const present = CONFIG_FILE_NAMES.map((name) => path.join(dir, name)).filter(exists);
  if (present.length > 1) {
    throw new ConfigError([
      {
        code: 'CONFIG_AMBIGUOUS',
        file: present[0]!,
        message: `${present.join(' and ')} all exist; keep one of them`,
      },
    ]);
  }
  return present[0];
}

/** Present unless it plainly is not there; anything else (EACCES…) is left for the read to report. */
function exists(p: string): boolean {
  try {
    fs.statSync(p);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return !(code === 'ENOENT' || code === 'ENOTDIR');
  }
}

/** Far above any real configuration; a bound so that a device or a huge file is refused, not read. */
const CONFIG_MAX_BYTES = 1024 * 1024;

function readFile(file: string): string {
  try {
    // a FIFO would block the read (and the start) until something writes to it: regular files only
    return readRegularFile(file, CONFIG_MAX_BYTES).toString('utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT'
        ? 'does not exist'
        : e.code === 'EISDIR'
          ? 'is a directory, not a file'
          : e.code === 'EACCES' || e.code === 'EPERM'
            ? 'permission denied'
            : e.code === 'ENOTREG' || e.code === 'EFBIG'
              ? e.message
            : `cannot be read (${e.code ?? e.message})`;
    throw new ConfigError([{ code: 'CONFIG_UNREADABLE', file, message: `config file ${file} ${why}` }]);
  }
}

function parseFile(file: string, text: string): unknown {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (text.trim() === '') return undefined;
  if (path.extname(file).toLowerCase() === '.json') {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new ConfigError([{ code: 'CONFIG_PARSE', file, message: `file ${file}: not valid JSON: ${jsonReason(err, text)}` }]);
    }
  }
  try {
    return yaml.load(text, { filename: file, schema: yaml.CORE_SCHEMA });
  } catch (err) {
    // The exception's message quotes the file's lines (maybe a secret): use only its reason and position.
    const e = err as { reason?: string; mark?: { line: number; column: number } };
    const at = e.mark ? ` at line ${e.mark.line + 1}, column ${e.mark.column + 1}` : '';
    throw new ConfigError([{ code: 'CONFIG_PARSE', file, message: `file ${file}: not valid YAML${at}: ${e.reason ?? 'parse error'}` }]);
  }
}

/** V8's JSON messages may quote the text (`… "…" is not valid JSON`): keep the reason and turn the offset into a line. */
function jsonReason(err: unknown, text: string): string {
  const message = String((err as Error).message);
  let reason = message.replace(/ in JSON at position \d+.*$/s, '');
  // `Unexpected token 'x', "…text…" is not valid JSON` (the quote may start with `...`): keep the first clause.
  if (/ is not valid JSON$/.test(reason)) {
    const cut = reason.search(/, (?:\.\.\.)?"/);
    reason = cut >= 0 ? reason.slice(0, cut) : 'syntax error';
  }
  if (reason.includes('"')) reason = 'syntax error';
  const pos = /at position (\d+)/.exec(message);
  if (!pos) return reason;
  const before = text.slice(0, Number(pos[1]));
  const line = before.split('\n').length;
  const column = before.length - before.lastIndexOf('\n');
  return `${reason} at line ${line}, column ${column}`;
}

function collectFileValues(
  parsed: unknown,
  file: string,
  leaves: Map<string, Leaf>,
  sections: Set<string>,
  problems: ConfigProblem[],
): Array<[string, unknown]> {
  const out: Array<[string, unknown]> = [];
  if (parsed === undefined || parsed === null) return out;
  if (!isPlainObject(parsed)) {
    problems.push({ code: 'CONFIG_INVALID', file, message: `file ${file}: the top level must be a mapping of keys, got ${kindOf(parsed)}` });
    return out;
  }
  const known = [...leaves.keys(), ...sections];
  const walk = (node: Record<string, unknown>, prefix: string): void => {
    for (const name of Object.keys(node)) {
      const key = prefix ? `${prefix}.${name}` : name;
      const value = node[name];
      const leaf = leaves.get(key);
      if (leaf) {
        const wrong = typeMismatch(leaf, value);
        if (wrong) problems.push({ code: 'CONFIG_INVALID', key, file, message: `file ${file}: ${key}: ${wrong}` });
        else out.push([key, value]);
      } else if (sections.has(key)) {
        if (value === null) continue; // `sinks:` with every child commented out
        if (isPlainObject(value)) walk(value, key);
        else problems.push({ code: 'CONFIG_INVALID', key, file, message: `file ${file}: ${key}: must be a mapping of keys, got ${kindOf(value)}` });
      } else {
        const hint = suggest(key, known);
        problems.push({
          code: 'CONFIG_UNKNOWN_KEY',
          key,
          file,
          message: `file ${file}: unknown key ${key}${hint ? ` (did you mean ${hint}?)` : ''}`,
        });
      }
    }
  };
  walk(parsed, '');
  return out;
}

/**
 * Convict coerces strings for number/boolean keys (`"no"` → true); the file must carry the right YAML/JSON type
 * instead, so the type is checked before convict sees the value.
 */
function typeMismatch(leaf: Leaf, value: unknown): string | null {
  if (isPlainObject(value)) return `expected a single value, got a mapping`;
  if (leaf.kind === 'other' || typeof value === leaf.kind) return null;
  const wanted = leaf.kind === 'number' ? 'a number' : leaf.kind === 'boolean' ? 'true or false' : 'a string';
  const shown = leaf.sensitive || value === null || Array.isArray(value) ? '' : ` ${JSON.stringify(clip(value))}`;
  return `expected ${wanted}, got ${kindOf(value)}${shown}`;
}

// ---- the environment ---------------------------------------------------------------------------------------------

function coerceEnv(leaf: Leaf, raw: string): { value: unknown } | { error: string } {
  const text = raw.trim();
  switch (leaf.kind) {
    case 'number':
      return /^[+-]?\d+$/.test(text) ? { value: Number(text) } : { error: 'expected an integer' };
    case 'boolean': {
      const t = text.toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(t)) return { value: true };
      if (['false', '0', 'no', 'off'].includes(t)) return { value: false };
      return { error: 'expected true or false (also 1/0, yes/no, on/off)' };
    }
    default:
      return { value: raw };
  }
}

// ---- convict's verdict -------------------------------------------------------------------------------------------

/** Convict reports `key: reason[: value was "…"]` (the value omitted for sensitive keys), one per line. */
function convictProblem(line: string, origins: Map<string, Origin>): ConfigProblem {
  const undeclared = /^configuration param '(.+)' not declared in the schema$/.exec(line);
  if (undeclared) {
    const key = undeclared[1]!;
    const origin = origins.get(key);
    return { code: 'CONFIG_UNKNOWN_KEY', key, ...originFields(origin), message: `${where(origin)}: unknown key ${key}` };
  }
  const m = /^([A-Za-z0-9_.-]+): (.*)$/s.exec(line);
  if (!m) return { code: 'CONFIG_INVALID', message: `configuration: ${line}` };
  const key = m[1]!;
  const origin = origins.get(key);
  let reason = m[2]!;
  // A URL may carry a password (userinfo) or a token (webhook paths): show only scheme://host[:port]/….
  const shown = /^(.*): value was "(.*)"$/s.exec(reason);
  if (shown && /(^|[._])url$/.test(key)) reason = `${shown[1]}: value was "${redactUrl(shown[2]!)}"`;
  // userinfo anywhere else (a broker list, an address): the value is not shown at all
  else if (shown && /[^\s/@]*:[^\s@]*@/.test(shown[2]!)) reason = shown[1]!;
  return { code: 'CONFIG_INVALID', key, ...originFields(origin), message: `${where(origin)}: ${key}: ${reason}` };
}

function where(origin: Origin | undefined): string {
  if (!origin) return 'default';
  return 'file' in origin ? `file ${origin.file}` : `env ${origin.env}`;
}

function originFields(origin: Origin | undefined): { file?: string; env?: string } {
  if (!origin) return {};
  return 'file' in origin ? { file: origin.file } : { env: origin.env };
}

// ---- small helpers -----------------------------------------------------------------------------------------------

function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

function kindOf(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'a list';
  if (isPlainObject(x)) return 'a mapping';
  if (typeof x === 'boolean') return 'a boolean';
  return `a ${typeof x}`;
}

function clip(x: unknown): unknown {
  return typeof x === 'string' && x.length > 80 ? `${x.slice(0, 77)}...` : x;
}

/** The closest known name, when it is close: a typo (edit distance ≤ 2) or the same last segment elsewhere. */
function suggest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  if (best) return best;
  const last = name.slice(name.lastIndexOf('.') + 1);
  const sameLeaf = known.filter((k) => k.endsWith(`.${last}`));
  return sameLeaf.length === 1 ? sameLeaf[0] : undefined;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

function deepFreeze<T>(x: T): T {
  if (typeof x === 'object' && x !== null) {
    for (const v of Object.values(x)) deepFreeze(v);
    Object.freeze(x);
  }
  return x;
}
