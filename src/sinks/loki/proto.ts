import protobuf from 'protobufjs';

/**
 * Loki's push schema (the subset the sink sends). The same text as push.proto beside this file, embedded so the
 * built package needs no .proto file at run time; test/unit/loki-encode.test.ts checks the two are identical.
 */
export const PUSH_PROTO = `
// The subset of Loki's pkg/push/push.proto (package logproto) that the sink sends, for protobufjs.
// Field numbers and types are Loki's; gogoproto options are dropped (they do not change the wire format), and
// google.protobuf.Timestamp is declared here with the same two fields so nothing else needs loading.
// Kept byte-identical to PUSH_PROTO in proto.ts (a unit test checks it).
syntax = "proto3";

package logproto;

message PushRequest {
  repeated StreamAdapter streams = 1;
}

message StreamAdapter {
  string labels = 1;
  repeated EntryAdapter entries = 2;
}

message LabelPairAdapter {
  string name = 1;
  string value = 2;
}

message EntryAdapter {
  Timestamp timestamp = 1;
  string line = 2;
  repeated LabelPairAdapter structuredMetadata = 3;
}

// wire-compatible with google.protobuf.Timestamp
message Timestamp {
  int64 seconds = 1;
  int32 nanos = 2;
}
`.slice(1);

export interface PbLabelPair {
  name: string;
  value: string;
}
export interface PbEntry {
  timestamp: { seconds: number; nanos: number };
  line: string;
  structuredMetadata: PbLabelPair[];
}
export interface PbStream {
  labels: string;
  entries: PbEntry[];
}

let pushRequest: protobuf.Type | undefined;

function type(): protobuf.Type {
  if (!pushRequest) pushRequest = protobuf.parse(PUSH_PROTO, { keepCase: true }).root.lookupType('logproto.PushRequest');
  return pushRequest;
}

/** Encodes a `logproto.PushRequest` (not yet compressed). */
export function encodePushRequest(streams: PbStream[]): Uint8Array {
  const t = type();
  // plain objects of the right shape encode directly (fromObject would copy every entry first)
  return t.encode({ streams } as unknown as protobuf.Message).finish();
}

/** Decodes a `logproto.PushRequest`: for tests and the benchmark. */
export function decodePushRequest(buf: Uint8Array): PbStream[] {
  const t = type();
  const obj = t.toObject(t.decode(buf), { longs: Number, defaults: true, arrays: true }) as { streams: PbStream[] };
  return obj.streams;
}
