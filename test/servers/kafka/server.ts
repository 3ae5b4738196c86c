/*
 * Start/stop helpers for the real Apache Kafka 4.1.1 broker (KRaft, single node: broker + controller in one JVM)
 * the Kafka sink is tested against, resolved by test/servers/kafka/setup.sh (run by `scripts/setup-host.sh test`).
 * Listens on 127.0.0.1 on free ports, in its own data directory; `start` formats the directory once (StorageTool
 * random-uuid + format) and waits until the broker port accepts a metadata request; `stop`/`kill` signal the PID
 * and wait for the exit. Never skipped: a missing install is an error naming the setup script.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CACHE_ROOT, freePort, killProcess, sleep, stopProcess, track } from '../common';

export { freePort, sleep };

export const KAFKA_VERSION = '4.1.1';
export const SETUP = 'test/servers/kafka/setup.sh';
export const KAFKA_LIB = path.join(CACHE_ROOT, 'kafka', KAFKA_VERSION, 'lib');

export interface KafkaHandle {
  /** `127.0.0.1:<port>` of the PLAINTEXT listener. */
  broker: string;
  port: number;
  controllerPort: number;
  dir: string;
  pid: () => number | null;
  running: () => boolean;
  /** (Re)starts on the same ports and data directory; waits until the broker answers. */
  start: () => Promise<void>;
  /** SIGTERM (controlled shutdown), wait for the exit (SIGKILL after `graceMs`). */
  stop: (graceMs?: number) => Promise<void>;
  kill: () => Promise<void>;
  log: () => string;
}

/** The broker answers an ApiVersions request (Kafka's first request of any client) on the port. */
function apiVersionsAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('error', () => done(false));
    sock.once('connect', () => {
      // ApiVersions v0: size, api_key 18, version 0, correlation id 1, client id "t"
      const body = Buffer.from([0, 18, 0, 0, 0, 0, 0, 1, 0, 1, 0x74]);
      const size = Buffer.alloc(4);
      size.writeInt32BE(body.length);
      sock.write(Buffer.concat([size, body]));
    });
    sock.once('data', (d) => done(d.length >= 8));
  });
}

function java(args: string[], cwd: string): string {
  const r = spawnSync('java', ['-cp', `${KAFKA_LIB}/*`, ...args], { cwd, encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`java ${args.slice(0, 2).join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

export interface KafkaOptions {
  dir?: string;
  /** Extra server.properties lines. */
  extra?: Record<string, string | number>;
}

/** Formats (first time) and starts a single-node KRaft Kafka on 127.0.0.1. */
export async function startKafka(opts: KafkaOptions = {}): Promise<KafkaHandle> {
  if (!fs.existsSync(path.join(KAFKA_LIB, `kafka_2.13-${KAFKA_VERSION}.jar`))) {
    throw new Error(`Kafka ${KAFKA_VERSION} is not installed in ${KAFKA_LIB}: run bash ${SETUP} (or scripts/setup-host.sh test)`);
  }
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'oomtrail-kafka-'));
  fs.mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const controllerPort = await freePort();
  const props: Record<string, string | number> = {
    'process.roles': 'broker,controller',
    'node.id': 1,
    'controller.quorum.voters': `1@127.0.0.1:${controllerPort}`,
    listeners: `PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'log.dirs': path.join(dir, 'data'),
    'num.partitions': 1,
    'offsets.topic.replication.factor': 1,
    'transaction.state.log.replication.factor': 1,
    'transaction.state.log.min.isr': 1,
    'share.coordinator.state.topic.replication.factor': 1,
    'share.coordinator.state.topic.min.isr': 1,
    'min.insync.replicas': 1,
    'group.initial.rebalance.delay.ms': 0,
    'auto.create.topics.enable': 'false',
    'log.flush.interval.messages': 1, // survive SIGKILL of the broker too
    ...opts.extra,
  };
  const propsFile = path.join(dir, 'server.properties');
  fs.writeFileSync(propsFile, Object.entries(props).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
  fs.writeFileSync(
    path.join(dir, 'log4j2.properties'),
    ['status = warn', 'appender.f.type = File', 'appender.f.name = F', `appender.f.fileName = ${path.join(dir, 'server.log')}`,
      'appender.f.layout.type = PatternLayout', 'appender.f.layout.pattern = [%d] %p %m (%c)%n', 'rootLogger.level = INFO',
      'rootLogger.appenderRef.f.ref = F'].join('\n') + '\n',
  );
  if (!fs.existsSync(path.join(dir, 'data', 'meta.properties'))) {
    const uuid = java(['kafka.tools.StorageTool', 'random-uuid'], dir).trim();
    java(['kafka.tools.StorageTool', 'format', '-t', uuid, '-c', propsFile], dir); // static quorum: no --standalone
  }

  let child: ChildProcess | null = null;
  const logFile = path.join(dir, 'stdout.log');
  const handle: KafkaHandle = {
    broker: `127.0.0.1:${port}`,
    port,
    controllerPort,
    dir,
    pid: () => (child && child.exitCode === null && child.signalCode === null ? child.pid ?? null : null),
    running: () => handle.pid() !== null,
    log: () => {
      const read = (f: string): string => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
      return (read(logFile) + read(path.join(dir, 'server.log'))).slice(-8000);
    },
    start: async () => {
      if (handle.running()) return;
      const out = fs.openSync(logFile, 'a');
      child = spawn('java', ['-Xmx512m', '-Xms128m', `-Dlog4j2.configurationFile=${path.join(dir, 'log4j2.properties')}`, '-cp', `${KAFKA_LIB}/*`, 'kafka.Kafka', propsFile], {
        cwd: dir,
        stdio: ['ignore', out, out],
      });
      fs.closeSync(out);
      const c = track(child);
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        if (c.exitCode !== null || c.signalCode !== null) throw new Error(`kafka exited (${c.exitCode ?? c.signalCode}) at start:\n${handle.log()}`);
        if (await apiVersionsAnswers(port)) return;
        await sleep(200);
      }
      await handle.kill();
      throw new Error(`kafka did not answer on ${port} within 60 s:\n${handle.log()}`);
    },
    stop: (graceMs = 30_000) => stopProcess(child, graceMs),
    kill: () => killProcess(child),
  };
  await handle.start();
  return handle;
}

// --- topic helpers (kafkajs) ------------------------------------------------------------------------------------

import { Kafka, logLevel, type IHeaders } from 'kafkajs';

export function client(broker: string, clientId = 'oomtrail-test'): Kafka {
  return new Kafka({ clientId, brokers: [broker], logLevel: logLevel.NOTHING, retry: { retries: 5, initialRetryTime: 200 } });
}

export async function createTopic(broker: string, topic: string, numPartitions = 1): Promise<void> {
  const admin = client(broker).admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions, replicationFactor: 1 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

export interface ReadMessage {
  partition: number;
  offset: string;
  key: string | null;
  value: Buffer;
  headers: Record<string, string>;
}

function headerStrings(h: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) out[k] = Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
  return out;
}

/** Every message in the topic right now (up to the high-water marks), read with a fresh consumer group. */
export async function readTopic(broker: string, topic: string, timeoutMs = 60_000): Promise<ReadMessage[]> {
  const kafka = client(broker);
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const want = new Map(ends.map((e) => [e.partition, BigInt(e.high)]));
  const total = [...want.values()].reduce((a, b) => a + b, 0n);
  const out: ReadMessage[] = [];
  if (total === 0n) return out;
  const consumer = kafka.consumer({ groupId: `read-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`, maxBytes: 50 * 1024 * 1024 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    let seen = 0n;
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => (resolveDone = r));
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          if (BigInt(m.offset) >= (want.get(batch.partition) ?? 0n)) continue;
          out.push({ partition: batch.partition, offset: m.offset, key: m.key ? m.key.toString('utf8') : null, value: m.value ?? Buffer.alloc(0), headers: headerStrings(m.headers) });
          seen++;
        }
        if (seen >= total) resolveDone();
      },
    });
    const t = setTimeout(() => resolveDone(), timeoutMs);
    await done;
    clearTimeout(t);
    if (seen < total) throw new Error(`read ${seen} of ${total} messages of ${topic} in ${timeoutMs} ms`);
  } finally {
    await consumer.disconnect();
  }
  return out;
}
