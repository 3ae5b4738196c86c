/*
 * The agent's own footprint at fleet density (issue #19): the built agent, default configuration
 * (only the JSONL file and spool moved to a temp dir, console output discarded), on 0, 1,000 and
 * 10,000 memory-limited cgroups that the bench creates and removes. For each size, side by side:
 * agent CPU % and RSS/HWM, the agent's marginal cost per cgroup and trail step, and the floor for
 * the same cgroups measured by a C helper in the same minute (open/read/close and pread of each
 * usage file). Then OOM kill -> JSONL line and OOM kill -> ClickHouse row visible, p50/p99 over the
 * same FP_KILLS kills: for those the agent runs with the ClickHouse sink on as well, against the ClickHouse
 * 26.9 engine behind the test front (test/servers/clickhouse, started here; schema created before the agent
 * starts, as on a fleet where the table exists), and the bench polls that table for its own cgroup's rows.
 * A server that cannot start is reported and the JSONL latency is measured without it.
 *
 *   npm run bench:footprint        (root; cgroup v1 or v2; FP_SIZES=0,1000,10000 FP_WINDOW_S=30 FP_KILLS=50)
 *   npm run bench:footprint -- --node /usr/bin/node --node "$(bash scripts/node-runtime.sh)/bin/node"
 *                                  the agents on each runtime in turn, rows side by side (default: the node running
 *                                  the bench, the pinned LTS under npm run); the kill latencies on the last one
 *   FP_SIZES= (empty) runs only the kill latencies; FP_CLICKHOUSE=0 skips the ClickHouse row;
 *   FP_CH_POLL_MS=50 is the poll interval of that table (it bounds the row latency's resolution).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { detectCgroupVersion } from '../src/host/facts';
import { makeDemoCgroup, removeCgroup } from '../src/cli/demo';
import { loadConfig } from '../src/config/load';
import { lit, migrate, tableRef } from '../src/sinks/clickhouse/schema';
import { rows as selectRows, sql, startChdb, type ServerHandle } from '../test/servers/clickhouse/servers';
import { memoryKiB } from '../test/helpers/metrics';

const SIZES = (process.env.FP_SIZES ?? '0,1000,10000')
  .split(',')
  .filter((s) => s.trim() !== '')
  .map(Number);
const WINDOW_S = Number(process.env.FP_WINDOW_S ?? 30);
const WARMUP_S = Number(process.env.FP_WARMUP_S ?? 15);
const KILLS = Number(process.env.FP_KILLS ?? 50);
const CLICKHOUSE = process.env.FP_CLICKHOUSE !== '0';
/** one small SELECT per interval: the chdb front answers one query at a time, the agent's inserts included */
const CH_POLL_MS = Number(process.env.FP_CH_POLL_MS ?? 50);
const STEP_MS = 1000; // trail.step_ms default
/** as systemd/oomtrail.service, the Dockerfile and scripts/run.sh start it */
const NODE_FLAGS = ['--max-semi-space-size=1', '--v8-pool-size=1'];
const MAIN = path.resolve(__dirname, '../src/cli/main.js');
/** `--node PATH`, repeatable: the runtimes the agents run on, in turn */
const NODES = ((): string[] => {
  const out: string[] = [];
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--node' && argv[i + 1]) out.push(argv[++i]);
    else if (argv[i].startsWith('--node=')) out.push(argv[i].slice('--node='.length));
    else throw new Error(`unknown argument ${argv[i]} (usage: footprint.js [--node PATH]...)`);
  }
  return out.length ? out : [process.execPath];
})();
/** targets (issue #19, kept for the runtime change of issue #28): idle CPU and RSS, CPU at 1,000 and 10,000 cgroups */
const TARGETS: Record<number, { cpuPct: number; rssMB?: number }> = { 0: { cpuPct: 0.1, rssMB: 64 }, 1000: { cpuPct: 0.5 }, 10000: { cpuPct: 4 } };
const FLOOR_C = path.resolve(__dirname, '../../bench/footprint-floor.c');

const version = detectCgroupVersion();
const ROOT = version === 1 ? '/sys/fs/cgroup/memory' : '/sys/fs/cgroup';
const PARENT = path.join(ROOT, `oomtrail-fp-${process.pid}`);
const USAGE = version === 1 ? 'memory.usage_in_bytes' : 'memory.current';
const LIMIT = version === 1 ? 'memory.limit_in_bytes' : 'memory.max';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-fp-'));

/** CPU time of the process, ns: utime+stime (/proc/<pid>/stat, 10 ms ticks) and summed schedstat of its threads (ns). */
function cpuNs(pid: number): { stat: number; sched: number } {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  const hz = 100;
  const stat = ((Number(f[11]) + Number(f[12])) * 1e9) / hz;
  let sched = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      sched += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      /* thread gone */
    }
  }
  return { stat, sched };
}

function memMB(pid: number): { rss: number; hwm: number } {
  const { rss, hwm } = memoryKiB(pid);
  return { rss: rss / 1024, hwm: hwm / 1024 };
}

function makeCgroups(n: number): string[] {
  if (!fs.existsSync(PARENT)) fs.mkdirSync(PARENT);
  if (version === 2) fs.writeFileSync(path.join(PARENT, 'cgroup.subtree_control'), '+memory');
  const dirs: string[] = [];
  for (let i = 0; i < n; i++) {
    // 100 per parent, like pods x containers
    const pod = path.join(PARENT, `pod${Math.floor(i / 100)}`);
    if (i % 100 === 0) {
      fs.mkdirSync(pod);
      if (version === 2) fs.writeFileSync(path.join(pod, 'cgroup.subtree_control'), '+memory');
    }
    const d = path.join(pod, `c${i}`);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, LIMIT), String(256 << 20));
    dirs.push(d);
  }
  return dirs;
}

function removeCgroups(): void {
  if (!fs.existsSync(PARENT)) return;
  for (const pod of fs.readdirSync(PARENT, { withFileTypes: true })) {
    if (!pod.isDirectory()) continue;
    const p = path.join(PARENT, pod.name);
    for (const c of fs.readdirSync(p, { withFileTypes: true })) if (c.isDirectory()) fs.rmdirSync(path.join(p, c.name));
    fs.rmdirSync(p);
  }
  fs.rmdirSync(PARENT);
}

function floors(dirs: string[], helper: string): { orc: number; pread: number } | null {
  if (!dirs.length) return null;
  const list = path.join(work, 'usage-files');
  fs.writeFileSync(list, dirs.map((d) => path.join(d, USAGE)).join('\n') + '\n');
  const [orc, pread] = execFileSync(helper, [list, '7'], { encoding: 'utf8' }).trim().split(' ').map(Number);
  return { orc, pread };
}

interface Agent {
  child: ChildProcess;
  events: string;
  config: string;
  stop(): Promise<void>;
}

const copies = new Map<string, string>();
/**
 * The agent runs from its own copy of the runtime binary, as it does when installed (the package's node serves the
 * agent alone): the kernel's page-out of start-up code skips pages another process maps, so a binary shared with
 * this bench's driver (or other jobs on /usr/bin/node) would keep ~20 MB of the driver's code in the agent's RSS.
 */
function privateCopy(node: string): string {
  let copy = copies.get(node);
  if (!copy) {
    copy = path.join(work, `runtime-${copies.size}`, 'node');
    fs.mkdirSync(path.dirname(copy));
    fs.copyFileSync(node, copy);
    fs.chmodSync(copy, 0o755);
    copies.set(node, copy);
  }
  return copy;
}

async function startAgent(tag: string, ch?: ServerHandle, node = NODES[NODES.length - 1]): Promise<Agent> {
  const dir = path.join(work, tag);
  fs.mkdirSync(dir);
  const events = path.join(dir, 'events.jsonl');
  const config = path.join(dir, 'config.yaml');
  let clickhouse = '';
  if (ch) {
    const pw = path.join(dir, 'ch-password');
    fs.writeFileSync(pw, `${ch.password}\n`, { mode: 0o600 });
    clickhouse = `  clickhouse:\n    enabled: true\n    url: ${JSON.stringify(ch.url)}\n    password_file: ${JSON.stringify(pw)}\n`;
  }
  // one state dir for every agent of the run: each starts where the one before left off, as a restarted agent does
  fs.writeFileSync(config, `sinks:\n  file:\n    path: ${JSON.stringify(events)}\n${clickhouse}pipeline:\n  spool:\n    dir: ${JSON.stringify(path.join(work, 'spool'))}\n`);
  const child = spawn(privateCopy(node), [...NODE_FLAGS, MAIN, 'run', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const until = Date.now() + 120_000;
  while (!/oomtrail \S+ started:/.test(err)) {
    if (child.exitCode !== null || Date.now() > until) throw new Error(`agent did not start:\n${err}`);
    await sleep(50);
  }
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return {
    child,
    events,
    config,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

interface Row {
  node: string;
  n: number;
  cpuPct: number;
  statPct: number;
  rss: number;
  hwm: number;
  floor: { orc: number; pread: number } | null;
  cpuNs: number;
}

async function measure(n: number, helper: string, node: string, label: string, index: number): Promise<Row> {
  const dirs = makeCgroups(n);
  try {
    const agent = await startAgent(`n${n}-${index}`, undefined, node);
    try {
      const pid = agent.child.pid!;
      await sleep(WARMUP_S * 1000);
      const c0 = cpuNs(pid);
      const t0 = process.hrtime.bigint();
      await sleep(WINDOW_S * 1000);
      const c1 = cpuNs(pid);
      const wall = Number(process.hrtime.bigint() - t0);
      const m = memMB(pid);
      const floor = floors(dirs, helper);
      return { node: label, n, cpuPct: ((c1.sched - c0.sched) / wall) * 100, statPct: ((c1.stat - c0.stat) / wall) * 100, rss: m.rss, hwm: m.hwm, floor, cpuNs: ((c1.sched - c0.sched) / wall) * 1e9 };
    } finally {
      await agent.stop();
    }
  } finally {
    removeCgroups();
  }
}

/**
 * The ClickHouse 26.9 engine behind the test front, with the agent's schema already in place (as on a fleet,
 * where the table exists before this agent's first insert); or why it could not be had.
 */
async function startClickHouse(): Promise<ServerHandle | string> {
  let server: ServerHandle | undefined;
  try {
    server = await startChdb({ dir: path.join(work, 'chdb') });
    const s = server;
    const ch = loadConfig({ etcDir: path.join(work, 'no-etc'), env: {} }).config.sinks.clickhouse;
    const version = (JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../package.json'), 'utf8')) as { version: string }).version;
    const run = { command: async (q: string) => void (await sql(s, q)), text: (q: string) => sql(s, q) };
    await migrate(run, { database: ch.database, table: ch.table, ttlDays: ch.ttl_days }, version);
    return server;
  } catch (e) {
    await server?.stop();
    return (e as Error).message.split('\n')[0];
  }
}

interface Latencies {
  /** OOM kill -> JSONL line, ms */
  jsonl: number[];
  /** OOM kill -> first poll that returned the row, ms; absent without a server */
  ch?: number[];
  /** duration of each poll query, ms */
  queryMs: number[];
  pollErrors: number;
  lastPollError?: string;
  /** `pipeline.batch.max_age_ms` the agent ran with */
  maxAgeMs: number;
}

const killNsOf = (time: string): number => {
  const [sec, frac = ''] = time.replace(/Z$/, '').split('.');
  return Date.parse(sec + 'Z') * 1e6 + Number(frac.padEnd(9, '0').slice(0, 9));
};

/**
 * OOM kill -> JSONL line: the record's `time` (the kernel's kill, CLOCK_REALTIME) to when the line was seen. With
 * `ch`, from the same kills: `time` to the first poll of the agent's table that returned the row. Each kill waits
 * for both before the next, so every row goes through an empty batch (the full max_age_ms wait).
 */
async function killLatency(kills: number, ch?: ServerHandle): Promise<Latencies> {
  const agent = await startAgent('kills', ch);
  const { config } = loadConfig({ file: agent.config, env: process.env });
  const cg = makeDemoCgroup(`oomtrail-fp-kill-${process.pid}`);
  const out: Latencies = { jsonl: [], queryMs: [], pollErrors: 0, maxAgeMs: config.pipeline.batch.max_age_ms };
  const lat = out.jsonl;
  const mine = '/' + path.relative(ROOT, cg.dir);
  let waiter = null as (() => void) | null;
  let polling = Boolean(ch);
  let poller: Promise<void> = Promise.resolve();
  try {
    fs.writeFileSync(agent.events, '', { flag: 'a' });
    let seen = 0;
    const watcher = fs.watch(agent.events, () => {
      const at = Date.now() * 1e6;
      const lines = fs.readFileSync(agent.events, 'utf8').split('\n').filter(Boolean);
      for (const l of lines.slice(seen)) {
        const r = JSON.parse(l) as { time: string; kind?: string; oom_cgroup?: string };
        // other processes on the host cause kills too: only this bench's cgroup counts
        if ((r.kind && r.kind !== 'oom_kill') || r.oom_cgroup !== mine) continue;
        lat.push((at - killNsOf(r.time)) / 1e6);
      }
      seen = lines.length;
      waiter?.();
    });
    if (ch) {
      const rowLat: number[] = (out.ch = []);
      const got = new Set<string>();
      const cfg = config.sinks.clickhouse;
      // this cgroup's rows only, the time as ns since the epoch (a double keeps it to 256 ns: plenty for ms)
      const query = `SELECT event_id AS id, toUnixTimestamp64Nano(time) AS t FROM ${tableRef(cfg)} WHERE oom_cgroup = ${lit(mine)} AND kind = 'oom_kill'`;
      poller = (async () => {
        while (polling) {
          const t0 = Date.now();
          try {
            const rs = await selectRows<{ id: string; t: number }>(ch, query);
            const at = Date.now();
            for (const r of rs) {
              if (got.has(r.id)) continue;
              got.add(r.id);
              rowLat.push(at - r.t / 1e6);
            }
            if (rs.length) waiter?.();
          } catch (e) {
            out.pollErrors++;
            out.lastPollError = (e as Error).message.split('\n')[0];
          }
          const took = Date.now() - t0;
          out.queryMs.push(took);
          await sleep(Math.max(0, CH_POLL_MS - took));
        }
      })();
    }
    // a row that does not come within this long stops the per-kill wait for rows (the JSONL wait goes on)
    let waitRows = Boolean(ch);
    for (let i = 0; i < kills; i++) {
      const want = lat.length + 1;
      const wantRows = (out.ch?.length ?? 0) + 1;
      const ready = () => lat.length >= want && (!waitRows || out.ch!.length >= wantRows);
      const done = new Promise<void>((r) => (waiter = () => ready() && r()));
      spawn('/bin/sh', ['-c', 'echo $$ > "$1" && exec dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null', 'sh', cg.procs], { stdio: 'ignore' });
      await Promise.race([done, sleep(15_000)]);
      if (waitRows && out.ch!.length < wantRows) waitRows = false;
    }
    watcher.close();
  } finally {
    polling = false;
    await poller;
    await agent.stop();
    await removeCgroup(cg.dir);
  }
  return out;
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

async function main(): Promise<void> {
  const helper = path.join(work, 'footprint-floor');
  execFileSync('cc', ['-O2', '-o', helper, FLOOR_C]);
  const rows: Row[] = [];
  // The first agent of a boot backfills every kill still in the kernel log that no agent recorded
  // (hundreds on a test host): a one-time cost, paid here before the measured agents start.
  process.stderr.write('footprint: a first agent on the state dir (backfill of this boot\'s kernel log) ...\n');
  const first = await startAgent('first');
  await sleep(5000);
  await first.stop();
  process.stderr.write(`footprint: it backfilled ${fs.existsSync(first.events) ? fs.readFileSync(first.events, 'utf8').split('\n').filter(Boolean).length : 0} kill(s)\n`);
  const versions = NODES.map((n) => execFileSync(n, ['--version'], { encoding: 'utf8' }).trim());
  // the same version twice (e.g. one with other flags through a wrapper): told apart by the file's name
  const labels = versions.map((v, i) => (versions.indexOf(v) !== versions.lastIndexOf(v) ? `${v} ${path.basename(NODES[i])}` : v));
  try {
    for (const n of SIZES) {
      // each size on every runtime back to back: the host's load drifts less between the rows compared
      for (const [i, node] of NODES.entries()) {
        process.stderr.write(`footprint: ${n} cgroups, node ${labels[i]} ...\n`);
        rows.push(await measure(n, helper, node, labels[i], i));
      }
    }
  } finally {
    removeCgroups();
  }
  console.log(`agent footprint, default config, cgroup v${version}, window ${WINDOW_S} s after ${WARMUP_S} s warm-up, ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(1)}`);
  if (rows.length) console.log('node       cgroups  cpu%(sched)  cpu%(stat)  rss MB  hwm MB  us/cgroup/step  C open/read/close us  C pread us  ratio vs orc  ratio vs pread  target');
  for (const r of rows) {
    const idle = rows.find((x) => x.n === 0 && x.node === r.node);
    const t = TARGETS[r.n];
    const met = t ? (r.cpuPct <= t.cpuPct && (t.rssMB === undefined || r.rss <= t.rssMB) ? 'met' : 'NOT MET') + ` (cpu <= ${t.cpuPct} %${t.rssMB ? `, rss <= ${t.rssMB} MB` : ''})` : '-';
    const steps = (WINDOW_S * 1000) / STEP_MS;
    const per = idle && r.n > 0 ? ((r.cpuNs - idle.cpuNs) * WINDOW_S) / 1e3 / (r.n * steps) : NaN;
    const f = r.floor;
    console.log(
      [
        r.node.padEnd(Math.max(9, ...rows.map((x) => x.node.length))),
        String(r.n).padStart(7),
        r.cpuPct.toFixed(3).padStart(12),
        r.statPct.toFixed(2).padStart(11),
        r.rss.toFixed(1).padStart(7),
        r.hwm.toFixed(1).padStart(7),
        (Number.isNaN(per) ? '-' : per.toFixed(2)).padStart(15),
        (f ? f.orc.toFixed(2) : '-').padStart(21),
        (f ? f.pread.toFixed(2) : '-').padStart(11),
        (f && !Number.isNaN(per) ? (per / f.orc).toFixed(2) : '-').padStart(13),
        (f && !Number.isNaN(per) ? (per / f.pread).toFixed(2) : '-').padStart(15),
        ' ' + met,
      ].join(' '),
    );
  }
  if (KILLS > 0) {
    let server: ServerHandle | undefined;
    let why = 'skipped (FP_CLICKHOUSE=0)';
    if (CLICKHOUSE) {
      process.stderr.write('footprint: starting ClickHouse (chdb) ...\n');
      const s = await startClickHouse();
      if (typeof s === 'string') why = `not measured: the ClickHouse server could not be started: ${s}`;
      else server = s;
    }
    process.stderr.write(`footprint: ${KILLS} OOM kills (node ${versions[versions.length - 1]}) ...\n`);
    try {
      const r = await killLatency(KILLS, server);
      const sinks = server ? 'file + ClickHouse sinks' : 'file sink';
      const stats = (xs: number[]) => `p50 ${pct(xs, 50)?.toFixed(1)} ms, p99 ${pct(xs, 99)?.toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms`;
      console.log(`OOM kill -> JSONL line (default batching, ${sinks}): ${r.jsonl.length}/${KILLS} kills, ${stats(r.jsonl)}`);
      if (r.ch) {
        const target = r.maxAgeMs + 500;
        const p99 = pct(r.ch, 99);
        const verdict = r.ch.length < KILLS ? 'rows missing' : p99 <= target ? 'met' : 'not met';
        console.log(
          `OOM kill -> ClickHouse row visible (${server!.kind}, polled every ${CH_POLL_MS} ms, query p50 ${pct(r.queryMs, 50)} ms): ${r.ch.length}/${KILLS} kills, ${r.ch.length ? stats(r.ch) : 'no rows'}; target p99 <= pipeline.batch.max_age_ms ${r.maxAgeMs} + 500 = ${target} ms: ${verdict}`,
        );
        if (r.pollErrors) console.log(`  ${r.pollErrors} poll(s) failed, last: ${r.lastPollError}`);
      } else {
        console.log(`OOM kill -> ClickHouse row visible: ${why}`);
      }
    } finally {
      await server?.stop();
    }
  }
}

main()
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => fs.rmSync(work, { recursive: true, force: true }));
