/*
 * The webhook sink end to end: real OOM kills, the real agent (`oomtrail run`, JSONL file sink + webhook sink),
 * and a real local HTTP receiver (node:http on 127.0.0.1) whose answers the test scripts.
 *  - json: a kill's record reaches the receiver within 2 s of the kill, byte for byte the JSONL line.
 *  - 503 twice then 200: retried through the lane, delivered once after 3 POSTs, nothing dead-lettered.
 *  - 400: one POST only, then the record is in webhook.dead-letter.jsonl with the receiver's reason.
 *  - a POST that times out is retried; alertmanager format carries a valid Alertmanager v2 alert.
 * Needs root and a memory cgroup controller (like test/e2e). Runtime: ~6 s.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { encodeRecordJson } from '../../src/record/json';
import type { OomRecord } from '../../src/record/record';
import { startAgent, sleep, type RunningAgent } from '../helpers/agent';
import { makeTestCgroup, removeCgroup, spawnDdHog, type TestCgroup } from '../helpers/cgroup';

interface Received {
  at: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A receiver that answers the n-th POST of a body with the n-th scripted reply (the last one repeats). */
class Receiver {
  readonly posts: Received[] = [];
  private server!: http.Server;
  url = '';
  constructor(private readonly script: Array<number | 'hang'>) {}

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        if (req.method !== 'POST') return void res.writeHead(405).end();
        // the script runs per distinct body (a lane resends the same batch): foreign kills get their own script
        const i = this.posts.filter((p) => p.body === body).length;
        this.posts.push({ at: Date.now(), headers: req.headers, body });
        const reply = this.script[Math.min(i, this.script.length - 1)];
        if (reply === 'hang') return; // never answers: the agent's request timeout fires
        res.writeHead(reply, { 'content-type': 'text/plain' }).end(reply >= 400 ? `scripted ${reply}` : '');
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  /** POSTs carrying victim `pid` (other tests on this host cause OOM kills too, and the agent records them all). */
  about(pid: number): Received[] {
    const re = new RegExp(`victim_pid\\\\?":${pid}[,}]`);
    return this.posts.filter((p) => re.test(p.body));
  }

  async waitPosts(pid: number, n: number, timeoutMs: number): Promise<Received[]> {
    const until = Date.now() + timeoutMs;
    while (this.about(pid).length < n) {
      if (Date.now() > until) throw new Error(`receiver got ${this.about(pid).length} POSTs about pid ${pid}, expected ${n}`);
      await sleep(10);
    }
    return this.about(pid);
  }
}

describe('webhook sink: real OOM kills to a real HTTP receiver', () => {
  let cg: TestCgroup;
  const agents: RunningAgent[] = [];
  const receivers: Receiver[] = [];

  before(() => {
    cg = makeTestCgroup(`oomtrail-webhook-${process.pid}`);
  });
  after(async () => {
    for (const a of agents) await a.stop('SIGKILL');
    for (const r of receivers) await r.stop();
    await removeCgroup(cg.dir);
  });

  async function setup(script: Array<number | 'hang'>, env: NodeJS.ProcessEnv = {}): Promise<{ agent: RunningAgent; rx: Receiver }> {
    const rx = new Receiver(script);
    await rx.start();
    receivers.push(rx);
    const agent = await startAgent('', {
      OOMTRAIL_SINKS_WEBHOOK_ENABLED: 'true',
      OOMTRAIL_SINKS_WEBHOOK_URL: rx.url,
      OOMTRAIL_PIPELINE_RETRY_INITIAL_MS: '100',
      OOMTRAIL_PIPELINE_RETRY_MAX_MS: '400',
      ...env,
    });
    agents.push(agent);
    return { agent, rx };
  }

  async function kill(): Promise<{ pid: number; at: number }> {
    const at = Date.now();
    const hog = await spawnDdHog(cg.procs);
    assert.equal(hog.signal, 'SIGKILL', 'the hog was OOM-killed');
    return { pid: hog.pid, at };
  }

  test('json: the record arrives within 2 s of the kill, byte for byte the JSONL line', async () => {
    const { agent, rx } = await setup([200], { OOMTRAIL_PIPELINE_BATCH_MAX_AGE_MS: '200' });
    const k = await kill();
    const [post] = await rx.waitPosts(k.pid, 1, 2_000);
    const latency = post.at - k.at;
    console.log(`# webhook delivery ${latency} ms after the kill started`);
    assert.ok(latency < 2_000, `${latency} ms`);
    assert.equal(post.headers['content-type'], 'application/json');
    const body = JSON.parse(post.body) as { records: OomRecord[] };
    const mine = body.records.filter((r) => r.victim_pid === k.pid);
    assert.equal(mine.length, 1);
    assert.equal(mine[0].constraint, 'memcg');
    const [rec] = await agent.waitFor((rs) => rs.some((r) => r.victim_pid === k.pid), 2_000, 'the JSONL record');
    assert.ok(post.body.includes(encodeRecordJson(rec)), 'the record is embedded byte for byte');
  });

  test('503, 503, 200: retried through the lane, delivered once, nothing dead-lettered', async () => {
    const { agent, rx } = await setup([503, 503, 200]);
    const k = await kill();
    await rx.waitPosts(k.pid, 3, 5_000);
    await sleep(500);
    assert.equal(rx.about(k.pid).length, 3, 'no POST after the 200');
    assert.ok(!fs.existsSync(path.join(agent.dir, 'spool', 'webhook.dead-letter.jsonl')));
  });

  test('400: never retried, the record is dead-lettered with the receiver reason', async () => {
    const { agent, rx } = await setup([400]);
    const k = await kill();
    await rx.waitPosts(k.pid, 1, 3_000);
    const dl = path.join(agent.dir, 'spool', 'webhook.dead-letter.jsonl');
    const until = Date.now() + 3_000;
    while (!fs.existsSync(dl) && Date.now() < until) await sleep(20);
    await sleep(700); // a retry would have come by now (initial 100 ms, max 400 ms)
    assert.equal(rx.about(k.pid).length, 1, 'exactly one POST');
    const text = fs.readFileSync(dl, 'utf8');
    assert.match(text, /HTTP 400: scripted 400/);
    assert.ok(text.includes(`"victim_pid":${k.pid}`), text);
  });

  test('timeout then 200, alertmanager format: retried, a valid Alertmanager v2 alert', async () => {
    const { rx } = await setup(['hang', 200], {
      OOMTRAIL_SINKS_WEBHOOK_FORMAT: 'alertmanager',
      OOMTRAIL_SINKS_WEBHOOK_REQUEST_TIMEOUT_MS: '300',
      OOMTRAIL_SINKS_WEBHOOK_ALERTMANAGER_LABELS: 'cluster=test',
    });
    const k = await kill();
    const posts = await rx.waitPosts(k.pid, 2, 5_000);
    assert.equal(posts[0].body, posts[1].body, 'the same alert is resent');
    const alerts = JSON.parse(posts[1].body) as Array<{ labels: Record<string, string>; annotations: Record<string, string>; startsAt: string; endsAt: string }>;
    assert.ok(Array.isArray(alerts) && alerts.length >= 1);
    const a = alerts.find((x) => (JSON.parse(x.annotations.record) as OomRecord).victim_pid === k.pid)!;
    assert.ok(a, 'an alert for the victim');
    assert.equal(a.labels.alertname, 'OOMKill');
    assert.equal(a.labels.cluster, 'test');
    assert.equal(a.labels.constraint, 'memcg');
    assert.equal(a.labels.victim_comm, 'dd');
    for (const v of Object.values(a.labels)) assert.equal(typeof v, 'string');
    assert.ok(Date.parse(a.endsAt) > Date.parse(a.startsAt));
    assert.ok(Math.abs(Date.parse(a.startsAt) - k.at) < 5_000, `startsAt ${a.startsAt} is the kill time`);
    assert.equal((JSON.parse(a.annotations.record) as OomRecord).victim_pid, k.pid);
  });
});
