/*
 * An independent, read-only reader of a lane's spool directory (`<spool.dir>/<sink>/`): segment
 * frames `[u32 len][u32 crc][u64 seq][payload]` and the `ack.state` file `[u32 len][u32 crc][json]`.
 * It does not use src/pipeline/spool.ts, so it can serve as the oracle for what is on disk.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { OomRecord } from '../../src/record/record';

export interface SpoolOnDisk {
  segments: string[];
  segmentBytes: number;
  ackedThrough: number;
  /** Records in segments that the ack state does not cover, in seq order. */
  pending: { seq: number; record: OomRecord }[];
}

export function readSpoolDir(dir: string): SpoolOnDisk {
  const out: SpoolOnDisk = { segments: [], segmentBytes: 0, ackedThrough: 0, pending: [] };
  if (!fs.existsSync(dir)) return out;
  const acked = new Set<number>();
  const state = path.join(dir, 'ack.state');
  if (fs.existsSync(state)) {
    const buf = fs.readFileSync(state);
    const st = JSON.parse(buf.subarray(8, 8 + buf.readUInt32LE(0)).toString('utf8')) as { acked_through: number; acked: number[] };
    out.ackedThrough = st.acked_through;
    for (const s of st.acked) acked.add(s);
  }
  for (const file of fs.readdirSync(dir).filter((n) => /^\d{20}\.seg$/.test(n)).sort()) {
    out.segments.push(file);
    const buf = fs.readFileSync(path.join(dir, file));
    out.segmentBytes += buf.length;
    for (let off = 0; off + 16 <= buf.length; ) {
      const len = buf.readUInt32LE(off);
      if (off + 16 + len > buf.length) break; // torn tail
      const seq = Number(buf.readBigUInt64LE(off + 8));
      if (seq > out.ackedThrough && !acked.has(seq)) {
        out.pending.push({ seq, record: JSON.parse(buf.subarray(off + 16, off + 16 + len).toString('utf8')) as OomRecord });
      }
      off += 16 + len;
    }
  }
  return out;
}
