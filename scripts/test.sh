#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what it needs, builds, runs unit, e2e (real
# OOM kills on this host) and the VM kernel matrix. Output is node:test's. Root needed.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
OOMTRAIL_BACKGROUND_BUILDS=1 bash scripts/setup-host.sh test
host=(dist/test/unit/*.test.js dist/test/e2e/*.test.js)
if ls dist/test/integration/*.test.js >/dev/null 2>&1; then host+=(dist/test/integration/*.test.js); fi
# two runs: the files that start Loki go to the second, with the VM files, so on a cold cache Loki's background
# build (setup-host.sh) gets the whole host phase (deploy-grafana waited 304 s for it when it ran among the e2e
# files); node --test sorts the files it is given, so one run cannot order them
first=()
late=()
for f in "${host[@]}"; do
  if grep -qE "loki/server[\"']" "$f"; then late+=("$f"); else first+=("$f"); fi
done
if [ "${OOMTRAIL_SKIP_VM:-0}" != 1 ] && ls dist/test/vm/*.test.js >/dev/null 2>&1; then
  late+=(dist/test/vm/*.test.js)
fi
# the pinned Node.js LTS (runtime/node.version) runs the tests, first in PATH: every agent a test spawns (`node`,
# process.execPath) and the VM guests' node are that runtime too
runtime="$(bash scripts/node-runtime.sh)"
export PATH="$runtime/bin:$PATH"
echo "[test] $((${#first[@]} + ${#late[@]})) test files in two runs (${#first[@]} + ${#late[@]}), node $(node --version) ($runtime)"
# one runner, one at a time: e2e tests cause real OOM kills and read the shared kernel log
rc=0
t1=$SECONDS
node --test --test-concurrency=1 "${first[@]}" || rc=$?
echo "[test] first run (host files without Loki) $((SECONDS - t1)) s, exit $rc"
if [ ${#late[@]} -gt 0 ]; then
  t1=$SECONDS
  node --test --test-concurrency=1 "${late[@]}" || rc=$?
  echo "[test] second run (Loki, VM) $((SECONDS - t1)) s, exit $rc"
fi
# what the background builds of setup-host.sh took (a cold cache), and none left running
bg_dir="${TMPDIR:-/tmp}/oomtrail-setup-bg"
for log in "$bg_dir"/*.log; do
  [ -f "$log" ] || continue
  name="$(basename "$log" .log)"
  pid="$(cat "$bg_dir/$name.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "[test] background $name: still running, stopped"; kill -- "-$pid" 2>/dev/null || true
  else
    echo "[test] background $name: $(grep -vE '^\[bg\]' "$log" | tail -1 | cut -c1-160); $(grep -E '^\[bg\]' "$log" | tail -1)"
  fi
done
echo "[test] total $((SECONDS - t0)) s"
exit $rc
