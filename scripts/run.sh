#!/usr/bin/env bash
# One command from a fresh clone to a running agent on the embedded default config
# (console + JSONL at /var/lib/oomtrail/events.jsonl). Root (or CAP_BPF+CAP_PERFMON) needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh run
# on the pinned Node.js LTS (runtime/node.version), not this machine's node
exec bash scripts/node.sh --max-semi-space-size=1 --v8-pool-size=1 dist/src/cli/main.js run "$@"
