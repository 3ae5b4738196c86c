/*
 * The two clocks of issue 25 part 4, for the VM's clock test: the kernel's NTP tick (adjtimex(2), straight
 * from libc through koffi: no tool in between that might not apply it), and the gap between CLOCK_MONOTONIC
 * (NTP-slewed; what process.hrtime and live kills' ledger times run on) and the kernel log's clock
 * (local_clock(), not slewed), measured with a line written to /dev/kmsg and its timestamp read back.
 */
import fs from 'node:fs';
import koffi from 'koffi';

/** struct timex (x86_64): 208 bytes, `modes` at 0, `tick` (µs per USER_HZ tick, long) at 88 */
const TIMEX_BYTES = 208;
const TICK_AT = 88;
const ADJ_TICK = 0x4000;

let adjtimexFn: ((buf: Buffer) => number) | null = null;

/** The kernel's tick in µs (10000 at USER_HZ 100 is nominal; 9000..11000 allowed), after setting it to `set` if given. */
export function kernelTick(set?: number): number {
  adjtimexFn ??= koffi.load('libc.so.6').func('int adjtimex(void *buf)') as (buf: Buffer) => number;
  const b = Buffer.alloc(TIMEX_BYTES);
  if (set !== undefined) {
    b.writeUInt32LE(ADJ_TICK, 0);
    b.writeBigInt64LE(BigInt(set), TICK_AT);
  }
  if (adjtimexFn(b) < 0) throw new Error(`adjtimex(${set === undefined ? 'read' : `tick ${set}`}) failed`);
  return Number(b.readBigInt64LE(TICK_AT));
}

/** CLOCK_MONOTONIC minus the kernel log's clock, in seconds, now: a probe line written to /dev/kmsg and read back. */
export function monotonicMinusKmsgS(): number {
  const tag = `oomtrail clock probe ${process.pid} ${process.hrtime.bigint()}`;
  const fd = fs.openSync('/dev/kmsg', fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  try {
    const t0 = process.hrtime.bigint();
    fs.writeSync(fd, tag + '\n'); // the newline finalizes the record: without it the kernel keeps it open for a continuation
    const t1 = process.hrtime.bigint();
    const buf = Buffer.alloc(16384);
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue; // records overwritten while reading
        if (code === 'EAGAIN') break;
        throw err;
      }
      // "<prio>,<seq>,<usec>,<flags>[,...];<message>\n"
      const line = buf.toString('latin1', 0, n);
      const semi = line.indexOf(';');
      if (semi < 0 || !line.startsWith(tag, semi + 1)) continue;
      const usec = Number(line.slice(0, semi).split(',')[2]);
      return (Number((t0 + t1) / 2n / 1000n) - usec) / 1e6;
    }
    throw new Error('the probe line was not read back from /dev/kmsg');
  } finally {
    fs.closeSync(fd);
  }
}

/** The clocksource the kernel keeps time with (tsc, hpet, acpi_pm, ...), for the test's diagnostics. */
export function clocksource(): string {
  try {
    return fs.readFileSync('/sys/devices/system/clocksource/clocksource0/current_clocksource', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}
