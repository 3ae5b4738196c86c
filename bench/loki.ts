/*
 * Loki sink benchmark, against a real Loki 3.7.8 started here (test/servers/loki), in one run:
 *   - records/s through LokiSink.write (stream building, encoding, one request per stream, answer parsing)
 *   - records/s of a plain Node fetch() pushing the very same request bodies, pre-encoded (the floor: HTTP + Loki)
 *   - protobuf+snappy vs JSON: bytes on the wire per record
 * Each mode writes to its own tenant (Loki would drop identical entries pushed twice into one tenant).
 *
 *   npx tsc -p . && node dist/bench/loki.js [records=20000] [batch=1000] [rounds=3]
 */
import { LokiSink } from '../src/sinks/loki/sink';
import { encodeBody, StreamBuilder, type EncodedBody } from '../src/sinks/loki/encode';
import type { LokiEncoding } from '../src/sinks/loki/config';
import type { OomRecord } from '../src/record/record';
import { startLoki, type LokiServer } from '../test/servers/loki/server';
import { lokiConfig, makeRecord, nowNs } from '../test/servers/loki/records';

const N = Number(process.argv[2] ?? 20_000);
const BATCH = Number(process.argv[3] ?? 1000);
const ROUNDS = Number(process.argv[4] ?? 3);

function batches(tag: number): OomRecord[][] {
  const base = nowNs() - 600_000_000_000n;
  const all = Array.from({ length: N }, (_, i) =>
    makeRecord(i, { host: 'bench-host', constraint: i % 5 ? 'memcg' : 'global', container_id: i % 3 ? '' : (i * 7919 + tag).toString(16).padStart(64, '0').slice(-64), victim_cgroup: `/kubepods/burstable/pod${i % 50}/c${i}` }, base + BigInt(i) * 1000n + BigInt(tag)),
  );
  const out: OomRecord[][] = [];
  for (let i = 0; i < all.length; i += BATCH) out.push(all.slice(i, i + BATCH));
  return out;
}

interface Result {
  mode: string;
  ms: number;
  bytes: number;
  requests: number;
}

async function viaSink(loki: LokiServer, encoding: LokiEncoding, tenant: string, data: OomRecord[][]): Promise<Result> {
  const sink = new LokiSink(lokiConfig(loki.url, { tenant_id: tenant, encoding }));
  const t0 = performance.now();
  for (const b of data) {
    const res = await sink.write(b);
    if (res.status !== 'delivered' || res.rejectedRecords) throw new Error(`sink: ${JSON.stringify(res).slice(0, 300)}`);
  }
  const ms = performance.now() - t0;
  const s = sink.stats();
  await sink.close();
  return { mode: `sink ${encoding}`, ms, bytes: s.bytes_sent, requests: s.requests };
}

/** The same request bodies the sink sends (one per stream), built before the clock starts. */
function preEncode(encoding: LokiEncoding, data: OomRecord[][]): EncodedBody[][] {
  const builder = new StreamBuilder(lokiConfig('http://x').limits, []);
  return data.map((b) => builder.build(b).streams.map((s) => encodeBody([s], encoding)));
}

async function viaFetch(loki: LokiServer, encoding: LokiEncoding, tenant: string, bodies: EncodedBody[][]): Promise<Result> {
  let bytes = 0;
  let requests = 0;
  const t0 = performance.now();
  for (const batch of bodies) {
    // like the sink: the streams of one batch concurrently
    await Promise.all(
      batch.map(async ({ body, contentType }) => {
        const r = await fetch(`${loki.url}/loki/api/v1/push`, { method: 'POST', headers: { 'Content-Type': contentType, 'X-Scope-OrgID': tenant }, body });
        await r.arrayBuffer();
        if (r.status !== 204) throw new Error(`fetch: HTTP ${r.status}`);
        bytes += body.length;
        requests++;
      }),
    );
  }
  return { mode: `fetch ${encoding}`, ms: performance.now() - t0, bytes, requests };
}

async function main(): Promise<void> {
  const loki = await startLoki({ auth: true });
  console.log(`loki ${loki.url} ready in ${loki.readyMs} ms; ${N} records in batches of ${BATCH}, ${ROUNDS} rounds`);
  const results: Record<string, number[]> = {};
  const bytes: Record<string, number> = {};
  let tag = 0;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const encoding of ['protobuf', 'json'] as const) {
        // fresh records per mode (new timestamps), so Loki stores every push; alternate which goes first
        const order = round % 2 ? (['fetch', 'sink'] as const) : (['sink', 'fetch'] as const);
        for (const how of order) {
          const data = batches(++tag);
          const tenant = `bench-${how}-${encoding}-${round}`;
          const r = how === 'sink' ? await viaSink(loki, encoding, tenant, data) : await viaFetch(loki, encoding, tenant, preEncode(encoding, data));
          (results[r.mode] ??= []).push((N / r.ms) * 1000);
          bytes[r.mode] = r.bytes;
          console.log(`  round ${round + 1} ${r.mode.padEnd(14)} ${((N / r.ms) * 1000).toFixed(0).padStart(7)} records/s  ${r.requests} requests  ${(r.bytes / N).toFixed(0)} B/record on the wire`);
        }
      }
    }
  } finally {
    await loki.destroy();
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log('\nmedian records/s (higher is better)');
  for (const [mode, xs] of Object.entries(results)) console.log(`  ${mode.padEnd(14)} ${median(xs).toFixed(0).padStart(7)}   bytes on the wire: ${bytes[mode]} (${(bytes[mode]! / N).toFixed(0)} B/record)`);
  for (const enc of ['protobuf', 'json']) {
    console.log(`  sink/fetch ${enc}: ${(median(results[`sink ${enc}`]!) / median(results[`fetch ${enc}`]!)).toFixed(2)}x`);
  }
  console.log(`  JSON bytes / protobuf+snappy bytes: ${(bytes['sink json']! / bytes['sink protobuf']!).toFixed(2)}x`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
