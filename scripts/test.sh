#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what it needs, builds, runs unit, e2e (real
# OOM kills on this host) and the VM kernel matrix. Output is node:test's. Root needed.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
bash scripts/setup-host.sh test
files=(dist/test/unit/*.test.js dist/test/e2e/*.test.js)
if ls dist/test/integration/*.test.js >/dev/null 2>&1; then files+=(dist/test/integration/*.test.js); fi
if [ "${OOMTRAIL_SKIP_VM:-0}" != 1 ] && ls dist/test/vm/*.test.js >/dev/null 2>&1; then
  files+=(dist/test/vm/*.test.js)
fi
# the pinned Node.js LTS (runtime/node.version) runs the tests, first in PATH: every agent a test spawns (`node`,
# process.execPath) and the VM guests' node are that runtime too
runtime="$(bash scripts/node-runtime.sh)"
export PATH="$runtime/bin:$PATH"
echo "[test] ${#files[@]} test files, node $(node --version) ($runtime)"
# one runner, one at a time: e2e tests cause real OOM kills and read the shared kernel log
node --test --test-concurrency=1 "${files[@]}"
echo "[test] total $((SECONDS - t0)) s"
