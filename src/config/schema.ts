import type convict from 'convict';
import { HOOK_ORDER, type Hook } from '../record/record';
import { enabledSinks, SINKS, type SinksConfig } from '../sinks/registry';
import { runtimeConfigSchema, type RuntimeEnrichConfig } from '../pipeline/assemble/runtime/config';
import { kubernetesEnrichConfigSchema, type KubernetesEnrichConfig } from '../pipeline/assemble/kubernetes-config';
import { emptyOrAbsolutePath, natural, nonEmptyString, positive, ringBytes } from './formats';

export { natural, nonEmptyString, positive };

/**
 * The configuration schema. Every key has a default, a doc line, and an env var named
 * `OOMTRAIL_` + the key path upper-cased with `.` → `_` (a unit test holds that rule).
 * `config/default.yaml` documents the same keys with the same values (a unit test holds that too).
 *
 * Keys whose values are secrets (future sink passwords, tokens) must carry `sensitive: true`: the loader never
 * prints their values, in any error or warning.
 *
 * Format functions throw messages that never contain the value: the loader adds it when the key is not sensitive.
 */

export type HookChoice = 'auto' | Hook;
export type OutputFormat = 'text' | 'json';
export type OverflowPolicy = 'block' | 'drop_newest' | 'drop_oldest';
export type FsyncPolicy = 'always' | 'batch' | 'never';
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export const HOOK_CHOICES: readonly HookChoice[] = ['auto', ...HOOK_ORDER];
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['text', 'json'];
export const OVERFLOW_POLICIES: readonly OverflowPolicy[] = ['block', 'drop_newest', 'drop_oldest'];
export const FSYNC_POLICIES: readonly FsyncPolicy[] = ['always', 'batch', 'never'];
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

/** The loaded configuration: a plain nested object, e.g. `config.sinks.file.path`. */
export interface AppConfig {
  collectors: {
    oomkill: {
      enabled: boolean;
      hook: HookChoice;
      backfill: boolean;
      backfill_journald: boolean;
      backfill_journald_dir: string;
      backfill_previous_boots: number;
      audit_grace_ms: number;
      candidates: number;
      ring_bytes: number;
    };
    reclaim: { enabled: boolean; death_wait_ms: number };
    psi: { enabled: boolean; trigger_stall_us: number; trigger_window_us: number; max_cgroup_triggers: number };
    alloc: { enabled: boolean };
  };
  trail: { enabled: boolean; step_ms: number; samples: number; max_cgroups: number; max_open_files: number };
  enrich: { runtime: RuntimeEnrichConfig; kubernetes: KubernetesEnrichConfig };
  pressure: { enabled: boolean; usage_ratio: number; psi_full_avg10: number; min_interval_ms: number };
  /** One part per sink in the registry (src/sinks/registry.ts). */
  sinks: SinksConfig;
  pipeline: {
    queue: { capacity: number; overflow: OverflowPolicy };
    batch: { max_events: number; max_bytes: number; max_age_ms: number };
    retry: { initial_ms: number; max_ms: number };
    spool: { dir: string; fsync: FsyncPolicy; max_bytes: number; hold_max_records: number; hold_max_bytes: number };
    dead_letter: { max_bytes: number; keep: number };
  };
  shutdown: { deadline_ms: number };
  metrics: { listen: string; sink_failing_after_ms: number };
  log: { level: LogLevel; format: OutputFormat };
  host: { name: string };
}

// ---- formats -------------------------------------------------------------------------------------------------

/** '' (use os.hostname()) or a name without control characters. */
export function hostName(x: unknown): void {
  if (typeof x !== 'string') throw new Error('must be a string');
  if (/[\u0000-\u001f\u007f]/.test(x)) throw new Error('must not contain control characters');
  if (x.length > 255) throw new Error('must be at most 255 characters');
}

export interface HostPort {
  /** '' means every interface. IPv6 literals are returned without brackets. */
  host: string;
  port: number;
}

/**
 * Parse `host:port`, `[ipv6]:port` or `:port` (every interface). Port 0..65535 (0 = ephemeral, for tests).
 * Returns null when the text is not of that shape.
 */
export function parseHostPort(text: string): HostPort | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?)|)?:(\d{1,5})$/.exec(text);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  const host = m[1] ?? m[2] ?? '';
  if (m[1] !== undefined && !m[1].includes(':')) return null; // brackets are for IPv6 only
  return { host, port };
}

/** '' (metrics endpoint off) or a listen address. */
export function listenAddress(x: unknown): void {
  if (typeof x !== 'string') throw new Error('must be a string');
  if (x !== '' && parseHostPort(x) === null) {
    throw new Error("must be '' (off) or host:port, [ipv6]:port or :port with a port 0-65535");
  }
}

export function ratio(x: unknown): void {
  if (typeof x !== 'number' || !(x > 0 && x <= 1)) throw new Error('must be a number in (0, 1]');
}

export function percent(x: unknown): void {
  if (typeof x !== 'number' || !(x >= 0 && x <= 100)) throw new Error('must be a number in [0, 100]');
}

/** PSI trigger windows the kernel accepts: 500 ms .. 10 s, in µs. */
export function psiWindowUs(x: unknown): void {
  if (!Number.isInteger(x) || (x as number) < 500000 || (x as number) > 10000000) throw new Error('must be an integer from 500000 to 10000000 (µs)');
}

// ---- schema --------------------------------------------------------------------------------------------------

export const schema: convict.Schema<AppConfig> = {
  collectors: {
    oomkill: {
      enabled: {
        doc: 'Run the OOM-kill collector (eBPF).',
        format: Boolean,
        default: true,
        env: 'OOMTRAIL_COLLECTORS_OOMKILL_ENABLED',
      },
      hook: {
        doc: 'Kernel hook: auto tries fentry, kprobe, tp_btf, tracepoint in that order; any other value allows only that one.',
        format: [...HOOK_CHOICES],
        default: 'auto',
        env: 'OOMTRAIL_COLLECTORS_OOMKILL_HOOK',
      },
      backfill: {
        doc: 'At start, record the kills the kernel log (/dev/kmsg) still holds that are not in this state dir (pipeline.spool.dir): no agent using it captured them (hook "kmsg").',
        format: Boolean,
        default: true,
        env: 'OOMTRAIL_COLLECTORS_OOMKILL_BACKFILL',
      },
      backfill_journald: {
        doc: 'With backfill: also read the kernel log systemd-journald keeps (journalctl), for the kills the ring lost and those of previous boots.',
        format: Boolean,
        default: true,
        env: 'OOMTRAIL_COLLECTORS_OOMKILL_BACKFILL_JOURNALD',
      },
      backfill_journald_dir: {
        doc: "Journal directory to read (journalctl --directory); '' = the system journal.",
        format: emptyOrAbsolutePath,
        default: '',
        env: 'OOMTRAIL_COLLECTORS_OOMKILL_BACKFILL_JOURNALD_DIR',
      },
      backfill_previous_boots: {
        doc: 'How many boots before the current one the journald backfill reads (0 = the current boot only).',
        format: natural,
        default: 1,
        env: 'OOMTRAIL_COLLECTORS_OOMKILL_BACKFILL_PREVIOUS_BOOTS',
      },
      audit_grace_ms: {
        doc: 'A kernel OOM kill (/proc/vmstat oom_kill) still without a record after this long counts as missed (milliseconds).',
        format: positive,
        default: 10000,
        env: 'OOMTRAIL_COLLECTORS_OOMKILL_AUDIT_GRACE_MS',
      },
      candidates: {
        doc: 'Top N tasks of the OOM domain by the kernel\'s badness, from its printed Tasks state table, in each record (0 = none).',
        format: natural,
        default: 5,
        env: 'OOMTRAIL_COLLECTORS_OOMKILL_CANDIDATES',
      },
      ring_bytes: {
        doc:
          'Size of the kernel ring buffer OOM events wait in (a power of two, at least 4096). A kill takes 8,568 bytes (two whole cgroup paths), or 344 when both its cgroups are those of the last full event (every member of a memory.oom.group sweep after the first): the default 1 MiB holds ~122 kills of different cgroups, or a 1,000-process sweep of one cgroup (344 KiB) three times over, even when the agent reads none of it meanwhile. It costs that much kernel memory (charged to the agent\'s cgroup) and twice that in RSS (mapped twice). An overflow is counted and recovered from the kernel log at once.',
        format: ringBytes,
        default: 1 << 20,
        env: 'OOMTRAIL_COLLECTORS_OOMKILL_RING_BYTES',
      },
    },
    reclaim: {
      enabled: {
        doc: 'Run the reclaim collector (eBPF raw tracepoints): reclaim stall and pages reclaimed per cgroup, aggregated in the kernel, and each victim\'s death.',
        format: Boolean,
        default: true,
        env: 'OOMTRAIL_COLLECTORS_RECLAIM_ENABLED',
      },
      death_wait_ms: {
        doc: 'Longest wait after a kill for the victim to exit before its record goes out without victim_exit_latency_ms (milliseconds; 0 = do not wait).',
        format: natural,
        default: 1000,
        env: 'OOMTRAIL_COLLECTORS_RECLAIM_DEATH_WAIT_MS',
      },
    },
    psi: {
      enabled: {
        doc: 'Read memory PSI (/proc/pressure/memory; per-cgroup memory.pressure on cgroup v2) into trails and arm PSI triggers.',
        format: Boolean,
        default: true,
        env: 'OOMTRAIL_COLLECTORS_PSI_ENABLED',
      },
      trigger_stall_us: {
        doc: 'PSI trigger: "some" stall time within the window that wakes the agent (microseconds).',
        format: positive,
        default: 100000,
        env: 'OOMTRAIL_COLLECTORS_PSI_TRIGGER_STALL_US',
      },
      trigger_window_us: {
        doc: 'PSI trigger window (microseconds, 500000 to 10000000); without CAP_SYS_RESOURCE the kernel takes only multiples of 2 s and a refused window is rounded up.',
        format: psiWindowUs,
        default: 1000000,
        env: 'OOMTRAIL_COLLECTORS_PSI_TRIGGER_WINDOW_US',
      },
      max_cgroup_triggers: {
        doc: 'Most per-cgroup PSI triggers armed at once (cgroup v2 only); all share one waiting thread.',
        format: natural,
        default: 256,
        env: 'OOMTRAIL_COLLECTORS_PSI_MAX_CGROUP_TRIGGERS',
      },
    },
    alloc: {
      enabled: {
        doc: 'Run the alloc collector (eBPF raw tracepoint mm_page_alloc): pages allocated per cgroup per trail step, counted in a per-CPU kernel map. Off by default: it costs more than 2 % on allocation-heavy work (bench/overhead.ts).',
        format: Boolean,
        default: false,
        env: 'OOMTRAIL_COLLECTORS_ALLOC_ENABLED',
      },
    },
  },
  enrich: { runtime: runtimeConfigSchema, kubernetes: kubernetesEnrichConfigSchema },
  trail: {
    enabled: {
      doc: 'Keep a ring of samples per memory-limited cgroup and attach the OOM cgroup\'s to each record as `trail`.',
      format: Boolean,
      default: true,
      env: 'OOMTRAIL_TRAIL_ENABLED',
    },
    step_ms: {
      doc: 'Sampling interval (milliseconds); also the interval of the reclaim collector\'s map reads.',
      format: positive,
      default: 1000,
      env: 'OOMTRAIL_TRAIL_STEP_MS',
    },
    samples: {
      doc: 'Samples kept per cgroup (samples x step_ms is the trail\'s length).',
      format: positive,
      default: 60,
      env: 'OOMTRAIL_TRAIL_SAMPLES',
    },
    max_cgroups: {
      doc: 'Most cgroups sampled and kept (about 3 kB each at 60 samples: 10000 cgroups ~ 30 MB).',
      format: positive,
      default: 10000,
      env: 'OOMTRAIL_TRAIL_MAX_CGROUPS',
    },
    max_open_files: {
      doc:
        "Most descriptors the trail keeps open (each cgroup's memory.pressure, its usage file where there is no cgroup iterator, PSI triggers). " +
        'The budget in use is the smaller of this and the soft RLIMIT_NOFILE less a reserve of max(1024, half the limit) for the rest of the agent (spool, ledger, sinks, journald, BPF); ' +
        'past it a cgroup\'s files are opened, read and closed each step. 0: read every cgroup by path.',
      format: natural,
      default: 32768,
      env: 'OOMTRAIL_TRAIL_MAX_OPEN_FILES',
    },
  },
  pressure: {
    enabled: {
      doc: 'Emit memory_pressure records (kind: memory_pressure) through the sinks when a cgroup crosses a threshold; needs trail.',
      format: Boolean,
      default: false,
      env: 'OOMTRAIL_PRESSURE_ENABLED',
    },
    usage_ratio: {
      doc: 'Usage at or above this fraction of the limit, and rising since the last sample, is pressure.',
      format: ratio,
      default: 0.9,
      env: 'OOMTRAIL_PRESSURE_USAGE_RATIO',
    },
    psi_full_avg10: {
      doc: 'PSI "full" avg10 (percent) at or above this is pressure (the cgroup\'s on v2, the host\'s for "/").',
      format: percent,
      default: 10,
      env: 'OOMTRAIL_PRESSURE_PSI_FULL_AVG10',
    },
    min_interval_ms: {
      doc: 'At most one memory_pressure record per cgroup in this many milliseconds.',
      format: natural,
      default: 60000,
      env: 'OOMTRAIL_PRESSURE_MIN_INTERVAL_MS',
    },
  },
  // each sink owns its part, beside its code (src/sinks/<name>/definition.ts)
  sinks: Object.fromEntries(Object.entries(SINKS).map(([name, d]) => [name, d.schema])) as unknown as convict.Schema<SinksConfig>,
  pipeline: {
    queue: {
      capacity: {
        doc: 'Records held between the collectors and the sink lanes.',
        format: positive,
        default: 10000,
        env: 'OOMTRAIL_PIPELINE_QUEUE_CAPACITY',
      },
      overflow: {
        doc: 'When the queue is full: block the collector, drop the newest record, or drop the oldest; every drop is counted.',
        format: [...OVERFLOW_POLICIES],
        default: 'block',
        env: 'OOMTRAIL_PIPELINE_QUEUE_OVERFLOW',
      },
    },
    batch: {
      max_events: {
        doc: 'A sink batch is written when it holds this many records…',
        format: positive,
        default: 1000,
        env: 'OOMTRAIL_PIPELINE_BATCH_MAX_EVENTS',
      },
      max_bytes: {
        doc: '…or this many encoded bytes…',
        format: positive,
        default: 1048576,
        env: 'OOMTRAIL_PIPELINE_BATCH_MAX_BYTES',
      },
      max_age_ms: {
        doc: '…or when its oldest record is this old (milliseconds).',
        format: natural,
        default: 1000,
        env: 'OOMTRAIL_PIPELINE_BATCH_MAX_AGE_MS',
      },
    },
    retry: {
      initial_ms: {
        doc: 'First retry delay after a retryable sink failure (milliseconds, > 0: 0 would retry a failing sink in a busy loop); doubles with jitter up to max_ms.',
        format: positive,
        default: 500,
        env: 'OOMTRAIL_PIPELINE_RETRY_INITIAL_MS',
      },
      max_ms: {
        doc: 'Cap of the retry delay (milliseconds); must be >= initial_ms.',
        format: natural,
        default: 30000,
        env: 'OOMTRAIL_PIPELINE_RETRY_MAX_MS',
      },
    },
    spool: {
      dir: {
        doc: 'Directory of the on-disk spool: records wait here until their sink acknowledges them.',
        format: nonEmptyString,
        default: '/var/lib/oomtrail/spool',
        env: 'OOMTRAIL_PIPELINE_SPOOL_DIR',
      },
      fsync: {
        doc: 'fsync the spool after every record (always), once per batch (batch), or leave it to the kernel (never).',
        format: [...FSYNC_POLICIES],
        default: 'always',
        env: 'OOMTRAIL_PIPELINE_SPOOL_FSYNC',
      },
      max_bytes: {
        doc: 'Spool size limit per sink (bytes). When full, new records are refused for that sink and counted (reason spool_full); spooled records are kept.',
        format: positive,
        default: 268435456,
        env: 'OOMTRAIL_PIPELINE_SPOOL_MAX_BYTES',
      },
      hold_max_records: {
        doc: 'Per sink: records held in memory while the spool cannot be written (disk full, quota, I/O error, read-only); they are delivered from memory and spooled once it takes writes again. Past the cap new records are dropped (reason hold_full); 0 = hold none.',
        format: natural,
        default: 1000,
        env: 'OOMTRAIL_PIPELINE_SPOOL_HOLD_MAX_RECORDS',
      },
      hold_max_bytes: {
        doc: 'Per sink: bytes (record JSON) held in memory while the spool cannot be written; past it new records are dropped (reason hold_full).',
        format: natural,
        default: 8388608,
        env: 'OOMTRAIL_PIPELINE_SPOOL_HOLD_MAX_BYTES',
      },
    },
    dead_letter: {
      max_bytes: {
        doc: 'Size of <spool dir>/<sink>.dead-letter.jsonl (and the relay\'s relay.dead-letter.jsonl), in bytes, past which it is renamed to .1 (.1 to .2, ...) before the next append.',
        format: positive,
        default: 16777216,
        env: 'OOMTRAIL_PIPELINE_DEAD_LETTER_MAX_BYTES',
      },
      keep: {
        doc: 'Rotated dead-letter files kept per sink and by the relay (.1 .. .keep; older ones are deleted); 0 = delete the full file.',
        format: natural,
        default: 3,
        env: 'OOMTRAIL_PIPELINE_DEAD_LETTER_KEEP',
      },
    },
  },
  shutdown: {
    deadline_ms: {
      doc: 'On SIGTERM/SIGINT, how long the stop may take in all (milliseconds), even with a sink that never answers: sinks are flushed until just before it; unsent records stay spooled (or, held in memory on a full disk, are reported lost).',
      format: natural,
      default: 10000,
      env: 'OOMTRAIL_SHUTDOWN_DEADLINE_MS',
    },
  },
  metrics: {
    listen: {
      doc: "Prometheus /metrics endpoint address, host:port (e.g. 127.0.0.1:9464, [::1]:9464, :9464); '' = off.",
      format: listenAddress,
      default: '',
      env: 'OOMTRAIL_METRICS_LISTEN',
    },
    sink_failing_after_ms: {
      doc: 'A sink that has not delivered for this long (milliseconds) is reported unhealthy.',
      format: natural,
      default: 300000,
      env: 'OOMTRAIL_METRICS_SINK_FAILING_AFTER_MS',
    },
  },
  log: {
    level: {
      doc: 'Agent log level (logs go to stderr).',
      format: [...LOG_LEVELS],
      default: 'info',
      env: 'OOMTRAIL_LOG_LEVEL',
    },
    format: {
      doc: 'Agent log format: text or json.',
      format: [...OUTPUT_FORMATS],
      default: 'text',
      env: 'OOMTRAIL_LOG_FORMAT',
    },
  },
  host: {
    name: {
      doc: "Host name written into every record; '' = os.hostname().",
      format: hostName,
      default: '',
      env: 'OOMTRAIL_HOST_NAME',
    },
  },
};

/** Checks that span keys. Each problem names the key it is reported against (for its source). */
export function crossCheck(config: AppConfig): Array<{ key: string; message: string; related?: string[] }> {
  const problems: Array<{ key: string; message: string; related?: string[] }> = [];
  if (config.pipeline.retry.max_ms < config.pipeline.retry.initial_ms) {
    problems.push({
      key: 'pipeline.retry.max_ms',
      message: `must be >= pipeline.retry.initial_ms (${config.pipeline.retry.initial_ms})`,
      related: ['pipeline.retry.initial_ms'],
    });
  }
  // both ride on the trail sampler: enabled without it they would do nothing, which a warning hid
  if (config.pressure.enabled && !config.trail.enabled) {
    problems.push({ key: 'pressure.enabled', message: 'needs trail.enabled (memory_pressure records come from the trail sampler)', related: ['trail.enabled'] });
  }
  if (config.collectors.alloc.enabled && !config.trail.enabled) {
    problems.push({ key: 'collectors.alloc.enabled', message: 'needs trail.enabled (allocations are counted per trail step)', related: ['trail.enabled'] });
  }
  // the lookup starts from the pod's name, which only the runtimes' labels give
  if (config.enrich.kubernetes.owner_lookup === 'on' && !config.enrich.runtime.enabled) {
    problems.push({ key: 'enrich.kubernetes.owner_lookup', message: 'is on but needs enrich.runtime.enabled (pod names come from the container runtimes)', related: ['enrich.runtime.enabled'] });
  }
  for (const { definition, config: c } of enabledSinks(config.sinks)) problems.push(...definition.check(c as never));
  return problems;
}
