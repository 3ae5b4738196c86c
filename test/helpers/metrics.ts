import fs from 'node:fs';
import type { RunningAgent } from './agent';

/** `http://host:port` of the agent's metrics endpoint, from its start-up line (works with `listen: 127.0.0.1:0`). */
export function metricsBase(agent: RunningAgent): string {
  const m = /started: .*; metrics (\S+):(\d+)$/m.exec(agent.stderr());
  if (!m) throw new Error(`agent start-up line names no metrics address:\n${agent.stderr().slice(-2000)}`);
  return `http://${m[1]}:${m[2]}`;
}

export async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: await res.text() };
}

/** Parsed Prometheus text: `name{a="x",b="y"}` (labels as rendered) → value. */
export class Scrape {
  readonly series = new Map<string, number>();

  constructor(readonly text: string) {
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const i = line.lastIndexOf(' ');
      this.series.set(line.slice(0, i), Number(line.slice(i + 1)));
    }
  }

  /** Value of one series, or undefined when absent. Labels in the order the agent renders them. */
  get(name: string, labels: Record<string, string> = {}): number | undefined {
    const l = Object.entries(labels)
      .map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`)
      .join(',');
    return this.series.get(l ? `${name}{${l}}` : name);
  }

  /** Every series of a metric. */
  all(name: string): [string, number][] {
    return [...this.series].filter(([k]) => k === name || k.startsWith(name + '{'));
  }
}

export async function scrape(agent: RunningAgent): Promise<Scrape> {
  const { status, body } = await httpGet(`${metricsBase(agent)}/metrics`);
  if (status !== 200) throw new Error(`/metrics answered ${status}: ${body}`);
  return new Scrape(body);
}

/** Polls /metrics until `pred` holds; returns that scrape. */
export async function waitForMetrics(agent: RunningAgent, pred: (s: Scrape) => boolean, timeoutMs: number, what: string): Promise<Scrape> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const s = await scrape(agent);
    if (pred(s)) return s;
    if (Date.now() > until) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last scrape:\n${s.text}\nagent log:\n${agent.stderr().slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** VmRSS / VmHWM of a process, in KiB, from /proc/<pid>/status. */
export function memoryKiB(pid: number): { rss: number; hwm: number } {
  const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(st)?.[1] ?? NaN);
  return { rss: get('VmRSS'), hwm: get('VmHWM') };
}
