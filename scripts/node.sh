#!/usr/bin/env bash
# Runs the pinned LTS node (runtime/node.version; fetched once by scripts/node-runtime.sh) with its bin directory
# first in PATH, so whatever the run spawns as `node` or process.execPath is the same runtime.
set -euo pipefail
dir="$(bash "$(dirname "$0")/node-runtime.sh")"
export PATH="$dir/bin:$PATH"
exec "$dir/bin/node" "$@"
