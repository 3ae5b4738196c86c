import { encodeRecordJson } from '../../record/json';
import type { OomRecord } from '../../record/record';
import type { KafkaKey } from './config';

/** The Kafka message of one record (the message contract, docs/kafka.md). */
export interface KafkaMessage {
  key: Buffer;
  /** encodeRecordJson(record): the same bytes as the record's JSON Lines line (without the newline). */
  value: Buffer;
  headers: { event_id: string; kind: string; schema_version: string };
}

export function messageKey(record: OomRecord, key: KafkaKey): string {
  switch (key) {
    case 'host':
      return record.host;
    case 'oom_cgroup':
      return record.oom_cgroup;
    case 'event_id':
      return record.event_id;
  }
}

export function encodeMessage(record: OomRecord, key: KafkaKey): KafkaMessage {
  return {
    key: Buffer.from(messageKey(record, key), 'utf8'),
    value: Buffer.from(encodeRecordJson(record), 'utf8'),
    headers: { event_id: record.event_id, kind: record.kind ?? 'oom_kill', schema_version: String(record.schema_version) },
  };
}

/** Bytes a message adds to a produce request, roughly (record overhead ~70 bytes + key + value + headers). */
export function messageSize(m: KafkaMessage): number {
  return 70 + m.key.length + m.value.length + 40 + m.headers.event_id.length + m.headers.kind.length + m.headers.schema_version.length;
}

/** Splits messages into consecutive chunks of at most `maxBytes` (a single larger message is its own chunk). */
export function chunkBySize<T>(items: readonly T[], size: (x: T) => number, maxBytes: number): T[][] {
  const out: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const it of items) {
    const n = size(it);
    if (cur.length > 0 && bytes + n > maxBytes) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(it);
    bytes += n;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}
