import type { OomRecord } from './record';

/** The record's JSON bytes: the JSONL file, the Loki line and the Kafka value all use exactly this. */
export function encodeRecordJson(record: OomRecord): string {
  return JSON.stringify(record);
}
