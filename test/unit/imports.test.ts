import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

// The import rules of docs/architecture: data flows collectors → pipeline → sinks, and nothing
// imports against it. Read from the TypeScript sources (the test runs from dist/test/unit).
const root = path.resolve(__dirname, '../../..');
const src = path.join(root, 'src');

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

interface Edge {
  from: string;
  to: string; // a src-relative module path, or a package name
  typeOnly: boolean;
}

const SPEC = /(?:^|[\s;])(import|export)\s+(type\s+)?(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]|(?:require|import)\(\s*['"]([^'"]+)['"]\s*\)/g;

function edges(): Edge[] {
  const out: Edge[] = [];
  for (const file of walk(src)) {
    const from = path.relative(src, file).replace(/\.ts$/, '');
    const text = fs.readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\/|^\s*\/\/.*$/gm, '');
    for (const m of text.matchAll(SPEC)) {
      const spec = m[3] ?? m[4];
      const typeOnly = Boolean(m[2]);
      let to = spec;
      if (spec.startsWith('.')) {
        const abs = path.resolve(path.dirname(file), spec);
        const rel = path.relative(src, abs);
        to = fs.existsSync(abs + '.ts') ? rel : fs.existsSync(path.join(abs, 'index.ts')) ? path.join(rel, 'index') : rel;
      }
      out.push({ from, to, typeOnly });
    }
  }
  return out;
}

const all = edges();

test('the import scanner sees the code (guards the rules below against an empty graph)', () => {
  assert.ok(all.length > 100, `only ${all.length} imports found`);
  assert.ok(all.some((e) => e.from === 'cli/main' && e.to.startsWith('config/')));
});

test('collectors never import from the pipeline', () => {
  const bad = all.filter((e) => e.from.startsWith('collectors/') && e.to.startsWith('pipeline/'));
  assert.deepEqual(bad.map((e) => `${e.from} → ${e.to}`), []);
});

test('sinks never import the config loader, convict or yaml', () => {
  const bad = all.filter(
    (e) => e.from.startsWith('sinks/') && (e.to === 'config/load' || e.to === 'convict' || e.to === 'js-yaml' || e.to === 'yaml'),
  );
  assert.deepEqual(bad.map((e) => `${e.from} → ${e.to}`), []);
});

test('nothing below the CLI imports the CLI; sinks and the record contract import neither collectors nor the pipeline', () => {
  const bad = all.filter(
    (e) =>
      (!e.from.startsWith('cli/') && e.to.startsWith('cli/')) ||
      ((e.from.startsWith('sinks/') || e.from.startsWith('record/')) && (e.to.startsWith('collectors/') || e.to.startsWith('pipeline/'))),
  );
  assert.deepEqual(bad.map((e) => `${e.from} → ${e.to}`), []);
});

test('host facts depend on no stage; the pipeline sees sinks only through their interface', () => {
  const stage = (t: string) => t.startsWith('pipeline/') || t.startsWith('collectors/') || t.startsWith('sinks/') || t.startsWith('cli/');
  const bad = all.filter(
    (e) => (e.from.startsWith('host/') && stage(e.to)) || (e.from.startsWith('pipeline/') && e.to.startsWith('sinks/') && e.to !== 'sinks/sink'),
  );
  assert.deepEqual(bad.map((e) => `${e.from} → ${e.to}`), []);
});

test('no circular imports (type-only imports included)', () => {
  const graph = new Map<string, Set<string>>();
  for (const e of all) {
    if (!graph.has(e.from)) graph.set(e.from, new Set());
    if (fs.existsSync(path.join(src, e.to + '.ts'))) graph.get(e.from)!.add(e.to);
  }
  // Tarjan's strongly connected components
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || graph.get(v)?.has(v)) cycles.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  assert.deepEqual(cycles, []);
});
