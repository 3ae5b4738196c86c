import fs from 'node:fs';
import yaml from 'js-yaml';

/**
 * A kubeconfig file as written by kubectl/kubeadm (YAML; JSON is YAML too), parsed. Here rather than in the
 * kubernetes_events sink because sinks take no YAML parser (their configuration is the loader's business); this
 * is a host file in a foreign format, like the others under host/. Bounded: a kubeconfig is a few kB.
 */
export function readKubeconfigFile(file: string): unknown {
  const st = fs.statSync(file);
  if (!st.isFile()) throw Object.assign(new Error(`${file} is not a regular file`), { code: 'ENOTREG', path: file });
  if (st.size > 1024 * 1024) throw Object.assign(new Error(`${file} is larger than 1 MiB`), { code: 'EFBIG', path: file });
  return yaml.load(fs.readFileSync(file, 'utf8'), { json: true });
}
