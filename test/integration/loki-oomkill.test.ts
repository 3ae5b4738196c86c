/*
 * Real OOM kills on this machine, the real agent (`oomtrail run`, JSONL file sink + Loki sink), a real Loki.
 * The JSONL file is the oracle: Loki must hold exactly its lines, each once, also across a 30 s Loki outage.
 * Needs root and a memory cgroup controller (like test/e2e). Never skipped.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { encodeRecordJson } from '../../src/record/json';
import type { OomRecord } from '../../src/record/record';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';
import { startLoki, type LokiServer } from '../servers/loki/server';
import { RecordingProxy } from '../servers/loki/proxy';
import { rfc3339ToNs } from '../../src/sinks/loki/encode';

const BURST = Number(process.env.OOMTRAIL_LOKI_BURST ?? 30);
const OUTAGE_MS = 30_000;

let loki: LokiServer;
let proxy: RecordingProxy;
let agent: RunningAgent | undefined;
const cgroups: TestCgroup[] = [];

async function lokiLines(query: string): Promise<string[]> {
  const streams = await loki.queryRange(query, { limit: 5000 });
  return streams.flatMap((s) => s.values.map(([, line]) => line));
}

async function waitLoki(query: string, pred: (lines: string[]) => boolean, timeoutMs: number, what: string): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const lines = await lokiLines(query);
    if (pred(lines)) return lines;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} in Loki (${lines.length} lines); agent log:\n${agent?.stderr().slice(-3000)}`);
    await sleep(250);
  }
}

before(async () => {
  loki = await startLoki({});
  proxy = new RecordingProxy(loki.url);
  await proxy.start();
  agent = await startAgent('', {
    OOMTRAIL_SINKS_LOKI_ENABLED: 'true',
    OOMTRAIL_SINKS_LOKI_URL: proxy.url,
    OOMTRAIL_SINKS_LOKI_LABELS: 'cluster=oomtrail-test',
    OOMTRAIL_PIPELINE_RETRY_INITIAL_MS: '200',
    OOMTRAIL_PIPELINE_RETRY_MAX_MS: '2000',
  });
});

after(async () => {
  const stopped = await agent?.stop('SIGTERM');
  await proxy?.stop();
  await loki?.destroy();
  for (const cg of cgroups) await removeCgroup(cg.dir);
  if (stopped) assert.equal(stopped.code, 0, `agent exit on SIGTERM; log:\n${agent?.stderr().slice(-3000)}`);
});

describe('loki: real OOM kills → real agent → real Loki', () => {
  const containerId = crypto.randomBytes(32).toString('hex');

  test('a kill in a container cgroup: | json line equals the JSONL record; container_id and event_id metadata filters find exactly it', async () => {
    const cg = makeTestCgroup(`docker-${containerId}.scope`);
    cgroups.push(cg);
    const hog = await spawnDdHog(cg.procs);
    assert.equal(hog.signal, 'SIGKILL', 'the hog must be OOM-killed');
    const rs = await agent!.waitFor((r) => r.some((x) => x.victim_pid === hog.pid), 15_000, `record of pid ${hog.pid}`);
    const rec = rs.find((x) => x.victim_pid === hog.pid)!;
    assert.equal(rec.container_id, containerId, 'enrichment saw the docker-<id>.scope cgroup');

    const byContainer = await waitLoki(`{job="oomtrail"} | container_id="${containerId}"`, (l) => l.length > 0, 20_000, 'the container kill');
    assert.deepEqual(byContainer, [encodeRecordJson(rec)], 'exactly one line, the JSONL bytes');
    assert.deepEqual(await lokiLines(`{job="oomtrail"} | event_id="${rec.event_id}"`), [encodeRecordJson(rec)]);
    const parsed = await loki.queryRange(`{job="oomtrail", host=${JSON.stringify(rec.host)}} | json | victim_pid=${rec.victim_pid}`);
    assert.equal(parsed.length, 1);
    assert.equal(parsed[0]!.values.length, 1);
    const labels = parsed[0]!.stream;
    assert.equal(labels.constraint, rec.constraint);
    assert.equal(labels.cluster, 'oomtrail-test');
    assert.equal(labels.kernel_release, rec.kernel_release, '| json extracted the line');
    assert.equal(JSON.parse(parsed[0]!.values[0]![1]).event_id, rec.event_id);
  });

  test(`Loki stopped for ${OUTAGE_MS / 1000} s during a burst of ${BURST} kills: every record arrives, once`, async () => {
    const cg = makeTestCgroup(`oomtrail-loki-burst-${process.pid}`);
    cgroups.push(cg);
    const ours = (r: OomRecord): boolean => r.victim_cgroup === cg.kernelPath;
    let killed = 0;
    const burst = (async () => {
      for (let i = 0; i < BURST; i++) {
        const hog = await spawnDdHog(cg.procs);
        if (hog.signal === 'SIGKILL') killed++;
      }
    })();
    await agent!.waitFor((r) => r.filter(ours).length >= 5, 30_000, '5 burst records');
    const tStop = Date.now();
    await loki.stop();
    const stopMs = Date.now() - tStop;
    const stoppedBy = loki.child?.signalCode ?? `exit ${loki.child?.exitCode}`;
    await burst;
    const whileDown = agent!.records().filter(ours).filter((r) => Date.parse(r.time) > tStop).length;
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - tStop)));
    const downMs = Date.now() - tStop;
    await loki.run();
    const all = await agent!.waitFor((r) => r.filter(ours).length >= killed, 15_000, `${killed} burst records`);
    const expected = all.filter(ours);
    assert.equal(expected.length, killed);
    assert.ok(whileDown >= 1, `kills happened while Loki was down (${whileDown})`);
    const t0 = Date.now();
    const lines = await waitLoki(`{job="oomtrail"} | victim_cgroup=${JSON.stringify(cg.kernelPath)}`, (l) => l.length >= killed, 60_000, `${killed} burst lines`);
    console.log(
      `# outage: ${killed} kills, ${whileDown} while Loki was down (${downMs} ms down, stop took ${stopMs} ms, ${stoppedBy}, restart ready in ${loki.readyMs} ms); all in Loki ${Date.now() - t0} ms after ready`,
    );
    assert.deepEqual([...lines].sort(), expected.map(encodeRecordJson).sort(), 'Loki holds exactly the JSONL lines, once each');
  });

  test('after the agent drains: Loki equals the JSONL file line for line; nothing sent twice; sum by (host) counts right', async () => {
    const stopped = await agent!.stop('SIGTERM');
    assert.equal(stopped.code, 0, agent!.stderr().slice(-3000));
    const records = agent!.records();
    agent = undefined;
    assert.ok(records.length >= BURST, `${records.length} records`);
    const lines = await waitLoki('{job="oomtrail"}', (l) => l.length >= records.length, 20_000, `${records.length} lines`);
    assert.deepEqual([...lines].sort(), records.map(encodeRecordJson).sort(), 'every JSONL record is in Loki, once, byte for byte');

    // what the sink sent: each record in exactly one push Loki answered 2xx (its own dedup would hide a resend)
    const ok = proxy.countsBy((s) => s >= 200 && s < 300);
    for (const r of records) assert.equal(ok.get(r.event_id), 1, `${r.event_id} accepted ${ok.get(r.event_id)}x`);
    const failed = proxy.pushes.filter((p) => p.status === 0).length;
    console.log(`# pushes: ${proxy.pushes.length} (${failed} unanswered while Loki was down), ${records.length} records`);

    // sum by (host) (count_over_time({job="oomtrail"}[5m])) at T = newest record + 1 s, against the JSONL file
    const newest = records.reduce((m, r) => (rfc3339ToNs(r.time)! > m ? rfc3339ToNs(r.time)! : m), 0n);
    const T = newest + 1_000_000_000n;
    const want: Record<string, number> = {};
    for (const r of records) {
      const ns = rfc3339ToNs(r.time)!;
      if (ns > T - 300_000_000_000n && ns <= T) want[r.host] = (want[r.host] ?? 0) + 1;
    }
    const got: Record<string, number> = {};
    for (const s of await loki.queryInstant('sum by (host) (count_over_time({job="oomtrail"}[5m]))', { timeNs: T })) got[s.metric.host!] = Number(s.value[1]);
    assert.deepEqual(got, want);
  });
});
