import { attributeError, loadConfig, type OriginOf } from '../config/load';
import { ConfigError } from '../config/errors';
import { MetricsError } from '../observe/metrics';
import type { AppConfig } from '../config/schema';
import { CollectorError, OomKillCollector } from '../collectors/oomkill/collector';
import { createLogger, type Logger } from '../observe/logger';
import { buildOptionalCollectors } from '../collectors/registry';
import { agentVersion } from '../host/facts';
import { probeRuntimes, RuntimeMetadata } from '../pipeline/assemble/runtime';
import { ownerLookupEnabled, ownerLookupOffReason } from '../pipeline/assemble/kubernetes-config';
import { encodeRecordJson } from '../record/json';
import { formatKillBlock } from '../sinks/console/format';
import { createSinks } from '../sinks/registry';
import { checkSinks, formatSinkHealth, logSinkHealth } from '../sinks/health';
import { loadLibBpf, loadedLibbpfPath } from '../bpf/libbpf';
import { EXIT_UNAVAILABLE, formatCheck, runCheck } from './check';
import { runDemo } from './demo';
import { DirLock, SpoolLockError } from '../pipeline/lock';
import { preflight, type PreflightReport } from './preflight';

const USAGE = `usage: oomtrail <command> [options]

commands:
  run   [--config FILE]            capture OOM kills until SIGINT/SIGTERM, then flush and exit 0
  check [--config FILE] [--json]   what this kernel offers and which hook run would use
  check --sinks [--config FILE] [--json]
                                   whether each enabled sink answers its healthcheck now (exit 69 if one does not)
  demo  [--config FILE] [--json]   cause one contained OOM kill (root) and print its record
  relay [--config FILE]            consume sinks.kafka.topic into sinks.clickhouse (the fleet path, docs/kafka.md)

exit codes: 0 ok, 1 runtime failure, 2 usage, 69 no usable OOM hook (check --sinks: a sink unreachable),
            78 configuration error (incl. spool dir in use)`;

export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, UNAVAILABLE: EXIT_UNAVAILABLE, CONFIG: 78 } as const;

interface Args {
  command: string;
  config?: string;
  json: boolean;
  sinks: boolean;
}

function parseArgs(argv: string[]): Args | string {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') return 'help';
  if (command === '--version' || command === 'version') return 'version';
  const args: Args = { command, json: false, sinks: false };
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a === '--config' || a === '-c') {
      if (!rest[i + 1]) return `${a} needs a file`;
      args.config = rest[++i];
    } else if (a.startsWith('--config=')) args.config = a.slice('--config='.length);
    else if (a === '--json' && command !== 'run') args.json = true;
    else if (a === '--sinks' && command === 'check') args.sinks = true;
    else return `unknown option ${a} for ${command}`;
  }
  if (!['run', 'check', 'demo', 'relay'].includes(command)) return `unknown command ${command}`;
  return args;
}

/** Where each key's value came from, once loaded: the exit handler names it in every configuration error. */
let originOf: OriginOf | null = null;

function load(args: Args): { config: AppConfig; sources: string[]; logger: Logger } {
  const loaded = loadConfig({ file: args.config });
  originOf = loaded.originOf;
  const { config, sources, warnings } = loaded;
  const logger = createLogger(config.log.level, config.log.format);
  for (const w of warnings) logger.warn(`config: ${w}`);
  return { config, sources, logger };
}

/** The pre-flight's refusals as one ConfigError (exit 78), before anything is attached or created. */
async function preflightOrThrow(config: AppConfig): Promise<PreflightReport> {
  const report = await preflight(config, originOf!);
  if (report.problems.length > 0) throw new ConfigError(report.problems);
  return report;
}

/** How long `check --sinks` waits for the sinks to close after their healthchecks. */
const CLOSE_WAIT_MS = 2000;

/**
 * `oomtrail check --sinks`: builds the enabled sinks as `run` would (a bad setting exits 78 naming the key) and
 * prints each one's healthcheck. Exit 0 when every enabled sink answers, 69 (EX_UNAVAILABLE) when one does not:
 * `run` would still start and spool its records, but a deployment check should not pass.
 */
async function checkSinksCommand(args: Args, config: AppConfig, logger: Logger): Promise<number> {
  await preflightOrThrow(config);
  const sinks = createSinks(config, logger);
  const results = await checkSinks(sinks);
  process.stdout.write(args.json ? JSON.stringify({ sinks: results, ok: results.every((r) => r.healthy) }) + '\n' : formatSinkHealth(results));
  const wait = new Promise((resolve) => setTimeout(resolve, CLOSE_WAIT_MS).unref());
  await Promise.race([Promise.allSettled(sinks.map((s) => s.close())), wait]);
  const code = results.every((r) => r.healthy) ? EXIT.OK : EXIT.UNAVAILABLE;
  // a client still retrying a connection (kafkajs) would hold the exit: fires only if something is left running
  setTimeout(() => process.exit(code), 100).unref();
  return code;
}

/** How long past `shutdown.deadline_ms` a stop may run before the process terminates itself. */
const STOP_MARGIN_MS = 1000;

/**
 * Dies of `signal` at once, as if it had not been handled (exit status 128 + n to a shell; a clean
 * stop signal to systemd). Unlike `process.exit`, this does not wait for libuv worker threads, one
 * of which may be stuck in a sink's write or open.
 */
function terminate(signal: NodeJS.Signals): never {
  process.removeAllListeners(signal); // the last listener gone, the default action is back
  process.kill(process.pid, signal);
  return process.exit(128 + (signal === 'SIGINT' ? 2 : 15)); // not reached unless the signal is ignored
}

async function run(args: Args): Promise<number> {
  // before the worker threads exist: each would otherwise keep its own malloc arena (~7 MB of idle RSS)
  if (!process.env.MALLOC_ARENA_MAX) loadLibBpf().mallocArenaMax?.(2);
  const { config, sources, logger } = load(args);
  // every setting this host cannot honour is refused here, before a BPF program is loaded or attached
  await preflightOrThrow(config);
  // taken before the attach, too: a second agent on this spool exits 78 with nothing attached
  const lock = DirLock.acquire(config.pipeline.spool.dir);
  const collector = new OomKillCollector({
    hook: config.collectors.oomkill.hook,
    logger,
    candidates: config.collectors.oomkill.candidates,
    ringBytes: config.collectors.oomkill.ring_bytes,
  });
  const { reclaim, trail } = buildOptionalCollectors(config, logger);
  // Both BPF objects load before the sinks, the runtimes and the agent grow the process: libbpf's parse
  // of the kernel's BTF (~12 MB, freed right after each load) is the agent's peak RSS. Kills from the
  // attach on wait in the ring buffer until the agent starts reading it.
  reclaim?.load();
  collector.load();
  // which runtime and which libbpf file this process really runs on (the package carries its own of both)
  logger.info(`runtime: node ${process.version} (${process.execPath}); libbpf ${loadLibBpf().versionString()} from ${loadedLibbpfPath() ?? 'an unknown path'}`);
  const sinks = createSinks(config, logger);
  // logrotate's postrotate convention; Node's default for SIGHUP would be to die
  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reopening files before the next write');
    for (const sink of sinks) sink.reopen?.();
  });
  const runtime = config.enrich.runtime.enabled ? new RuntimeMetadata(config.enrich.runtime, logger) : null;
  // before the agent reads the first kill: the cache holds the running containers by then
  await runtime?.start();
  // with enrich.kubernetes.owner_lookup on (auto: with the kubernetes_events sink) the pods' owners from the API;
  // client-node is loaded only then
  const owners = runtime && ownerLookupEnabled(config.enrich.kubernetes, config.sinks.kubernetes_events.enabled);
  /* eslint-disable-next-line @typescript-eslint/no-require-imports */
  const names = owners ? (require('../pipeline/assemble/owner') as typeof import('../pipeline/assemble/owner')).withOwnerLookup(config, logger, runtime) : runtime;
  // required only now, after the loads above: the pipeline's modules (~1.5 MB) would add to their peak
  const { Agent, describeStop } = await import('../pipeline/agent');
  const agent = new Agent({
    runtime: names,
    config,
    logger,
    collector,
    sinks,
    sources,
    reclaim,
    trail,
    lock,
    deathWaitMs: config.collectors.reclaim.death_wait_ms,
  });
  await agent.start();
  void logSinkHealth(sinks, logger); // logged, never fatal, not awaited: the spool covers an unreachable sink
  // loading the BPF objects parsed the kernel's BTF (~10 MB of malloc'd memory, freed but kept by
  // glibc in the main heap): give it back once, or it stays in the idle agent's RSS for good
  // and the node binary's start-up code leaves the resident set (what runs again faults back in from the file)
  setTimeout(() => {
    loadLibBpf().mallocTrim?.();
    loadLibBpf().pageOutExecutable?.();
  }, 2000).unref();
  const deadlineMs = config.shutdown.deadline_ms;
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      logger.info(`${sig}: stopping (deadline ${deadlineMs} ms; a second signal exits at once)`);
      process.removeAllListeners('SIGTERM').removeAllListeners('SIGINT');
      const now = (s: NodeJS.Signals) => {
        logger.warn(`${s} again: exiting now; undelivered records stay in the spool`);
        terminate(s);
      };
      process.once('SIGTERM', now).once('SIGINT', now);
      resolve(sig);
    };
    process.once('SIGTERM', onSignal).once('SIGINT', onSignal);
  });
  // A sink operation that never returns (hung mount, blocked FIFO) holds a libuv worker thread, and
  // with it the stop or even the exit: past deadline + margin, terminate instead. Unref'd: a clean
  // stop exits without waiting for it.
  setTimeout(() => {
    logger.error(
      `still running ${STOP_MARGIN_MS} ms past the ${deadlineMs} ms shutdown deadline (a sink operation hangs): ` +
        'terminating; undelivered records stay in the spool',
    );
    terminate(signal);
  }, deadlineMs + STOP_MARGIN_MS).unref();
  // bounded by the deadline: comes back with what was not delivered even when a sink never answers
  const report = await agent.stop(deadlineMs);
  runtime?.stop();
  const line = describeStop(report);
  if (line.startsWith('stopped; every record delivered') && report.complete) logger.info(line);
  else logger.warn(line);
  // The stop is over: whatever is still running must not keep the process past the deadline, neither a client
  // retrying its connection (a broker gone) nor a worker thread stuck in a sink's open (which would hold even
  // process.exit, and with it this timer's fallback). Fires only if something is left running.
  setTimeout(() => {
    try {
      loadLibBpf().exitNow?.(EXIT.OK);
    } catch {
      /* no libc binding: below */
    }
    terminate(signal);
  }, 20).unref();
  return EXIT.OK;
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (args === 'help') {
    process.stdout.write(USAGE + '\n');
    return EXIT.OK;
  }
  if (args === 'version') {
    process.stdout.write(agentVersion() + '\n');
    return EXIT.OK;
  }
  if (typeof args === 'string') {
    process.stderr.write(`oomtrail: ${args}\n${USAGE}\n`);
    return EXIT.USAGE;
  }
  if (args.command === 'run') return run(args);
  const { config, sources, logger } = load(args);
  if (args.command === 'relay') return (await import('../relay/relay')).runRelay(config, logger);
  if (args.command === 'check' && args.sinks) return checkSinksCommand(args, config, logger);
  if (args.command === 'check') {
    // the same refusals as `run`, with the same exit code; the report is printed either way
    const pre = await preflight(config, originOf!);
    const report = runCheck(logger, config.collectors.oomkill.hook, config, { sources, spool: pre.spool });
    if (config.enrich.runtime.enabled) report.runtimes = await probeRuntimes(config.enrich.runtime);
    const off = ownerLookupOffReason(config.enrich.kubernetes, config.sinks.kubernetes_events.enabled, config.enrich.runtime.enabled);
    // client-node is loaded only when the lookup is on
    /* eslint-disable-next-line @typescript-eslint/no-require-imports */
    report.owner_lookup = off ? { enabled: false, detail: off } : await (require('../pipeline/assemble/owner') as typeof import('../pipeline/assemble/owner')).probeOwnerLookup(config);
    process.stdout.write(args.json ? JSON.stringify({ ...report, refused: pre.problems.map((p) => p.message) }) + '\n' : formatCheck(report));
    if (pre.problems.length > 0) throw new ConfigError(pre.problems);
    return report.ok ? EXIT.OK : EXIT.UNAVAILABLE;
  }
  const record = await runDemo(logger, config.collectors.oomkill.hook);
  process.stdout.write(args.json ? encodeRecordJson(record) + '\n' : formatKillBlock(record));
  return EXIT.OK;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // One line on stderr naming the key and where its value came from; never a stack trace (systemd shows
    // the line, and a restart cannot fix a setting, so 78 is in the unit's RestartPreventExitStatus=).
    const source = (key: string) => originOf?.(key) ?? 'default';
    if (err instanceof ConfigError) {
      const e = originOf ? attributeError(err, originOf) : err;
      process.stderr.write(`oomtrail: configuration error: ${e.message}\n`);
      process.exit(EXIT.CONFIG);
    }
    if (err instanceof MetricsError && err.code === 'METRICS_LISTEN') {
      // The address is the operator's to fix (taken by another program, not local, privileged port)
      process.stderr.write(`oomtrail: configuration error: ${source('metrics.listen')}: metrics.listen: ${err.message.replace(/^metrics\.listen /, '')}\n`);
      process.exit(EXIT.CONFIG);
    }
    if (err instanceof SpoolLockError) {
      // another agent owns pipeline.spool.dir, or the directory cannot hold the lock: a restart would not help
      process.stderr.write(`oomtrail: configuration error: ${source('pipeline.spool.dir')}: pipeline.spool.dir: ${err.message}\n`);
      process.exit(EXIT.CONFIG);
    }
    if (err instanceof CollectorError) {
      process.stderr.write(`oomtrail: ${err.message}\n`);
      process.exit(EXIT.UNAVAILABLE);
    }
    process.stderr.write(`oomtrail: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(EXIT.FAILURE);
  },
);
