import path from 'node:path';
import type { AppConfig } from '../config/schema';
import { attributeProblem, type OriginOf } from '../config/load';
import type { ConfigProblem, KeyProblem } from '../config/errors';
import { unusablePath } from '../host/paths';
import { MetricsError, MetricsRegistry, startMetricsServer } from '../observe/metrics';
import { DirLock } from '../pipeline/lock';
import { JOURNAL_DIR } from '../pipeline/journal';
import { LEDGER_STATE_FILE } from '../pipeline/ledger';
import { enabledSinks, SINKS } from '../sinks/registry';
import { ownerKubeconfig, ownerLookupEnabled } from '../pipeline/assemble/kubernetes-config';

/**
 * What `run` refuses and `oomtrail check` reports, found before anything is loaded into the kernel: the settings
 * that are valid one by one but cannot work on this host (a spool dir that is a file or on a read-only mount, a
 * file sink path that is a directory, a secret that is a FIFO, a CA file that is not PEM, every sink off…). Each
 * problem names its key and where the value came from. Changes nothing on disk, connects to nothing; the one
 * side effect is a bind of metrics.listen, closed at once.
 */
export interface PreflightReport {
  problems: ConfigProblem[];
  /** the spool dir and the state kept in it (journal, kill ledger), for `check` to print */
  spool: { dir: string; state: string[]; heldBy: number | null };
}

export async function preflight(config: AppConfig, originOf: OriginOf): Promise<PreflightReport> {
  const raw: KeyProblem[] = [];
  if (!config.collectors.oomkill.enabled) raw.push({ key: 'collectors.oomkill.enabled', message: 'is false: no collector to run' });
  const enabledKeys = Object.keys(SINKS).map((n) => `sinks.${n}.enabled`);
  if (enabledSinks(config.sinks).length === 0) {
    // named after a switch the operator turned off (not one left at its default)
    const key = enabledKeys.find((k) => originOf(k) !== 'default') ?? enabledKeys[0]!;
    raw.push({
      key,
      message: 'every sink is disabled, so OOM kills would be captured into nothing; enable at least one sinks.<name>.enabled',
      related: enabledKeys.filter((k) => k !== key),
    });
  }
  const dir = config.pipeline.spool.dir;
  const spoolWhy = unusablePath(dir, 'directory');
  if (spoolWhy) raw.push({ key: 'pipeline.spool.dir', message: `${dir} ${spoolWhy}` });
  const heldBy = spoolWhy ? null : DirLock.holder(dir);
  if (heldBy !== null) {
    raw.push({
      key: 'pipeline.spool.dir',
      message: `${dir} is in use by another oomtrail agent (pid ${heldBy || 'unknown'}); two agents on one spool would deliver and delete each other's records`,
    });
  }
  for (const { definition, config: c } of enabledSinks(config.sinks)) raw.push(...definition.preflight(c as never));
  raw.push(...ownerLookupProblems(config));
  // the running agent holds its address: probing it would only repeat "in use"
  if (config.metrics.listen !== '' && heldBy === null) {
    try {
      const server = await startMetricsServer(config.metrics.listen, new MetricsRegistry());
      await server?.close();
    } catch (err) {
      if (!(err instanceof MetricsError)) throw err;
      raw.push({ key: 'metrics.listen', message: err.message.replace(/^metrics\.listen /, '') });
    }
  }
  return {
    problems: raw.map((p) => attributeProblem({ code: 'CONFIG_INVALID', key: p.key, message: `${p.key}: ${p.message}`, ...(p.related ? { related: p.related } : {}) }, originOf)),
    spool: { dir, state: [path.join(dir, JOURNAL_DIR), path.join(dir, LEDGER_STATE_FILE)], heldBy },
  };
}

/** The owner lookup's kubeconfig (or service account) when the lookup will run: read now, as the sink's is. */
function ownerLookupProblems(config: AppConfig): KeyProblem[] {
  const k = config.enrich.kubernetes;
  const sink = config.sinks.kubernetes_events;
  if (!config.enrich.runtime.enabled || !ownerLookupEnabled(k, sink.enabled)) return [];
  // the sink's own pre-flight already reports its kubeconfig
  if (!k.kubeconfig && sink.enabled) return [];
  // checked without loading client-node: that happens after the BPF objects load, when the lookup starts
  /* eslint-disable-next-line @typescript-eslint/no-require-imports */
  const { checkOwnerApi } = require('../pipeline/assemble/owner') as typeof import('../pipeline/assemble/owner');
  const r = checkOwnerApi(ownerKubeconfig(k, sink.kubeconfig));
  if (!r) return [];
  return [{ key: 'enrich.kubernetes.kubeconfig', message: r.problem, ...(k.kubeconfig ? {} : { related: ['sinks.kubernetes_events.kubeconfig'] }) }];
}
