#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what it needs, builds, runs unit, e2e (real
# OOM kills on this host) and the VM kernel matrix. Output is node:test's. Root needed.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
OOMTRAIL_BACKGROUND_BUILDS=1 bash scripts/setup-host.sh test
host=(dist/test/unit/*.test.js dist/test/e2e/*.test.js)
if ls dist/test/integration/*.test.js >/dev/null 2>&1; then host+=(dist/test/integration/*.test.js); fi
# the Kubernetes files (a real kube-apiserver + etcd; OOMTRAIL_K8S=0 leaves them out) run last, with Loki's
k8s=()
if [ "${OOMTRAIL_K8S:-1}" != 0 ] && ls dist/test/k8s/*.test.js >/dev/null 2>&1; then k8s=(dist/test/k8s/*.test.js); fi
# three runs, one at a time (e2e tests cause real OOM kills and read the shared kernel log; node --test sorts the
# files it is given, so one run cannot order them):
#  1. the host files, with the package VM test beside them (below);
#  2. the VM files (the 5.10 limits boot, the kernel matrix): software emulation, alone on the machine;
#  3. the files that start Loki, and the Kubernetes files: on a cold cache their background builds (setup-host.sh)
#     have runs 1 and 2 to finish (deploy-grafana waited 304 s for Loki when it ran among the e2e files)
first=()
vm=()
loki=()
for f in "${host[@]}"; do
  if grep -qE "loki/server[\"']" "$f"; then loki+=("$f"); else first+=("$f"); fi
done
last=("${loki[@]}" "${k8s[@]}")
pkgvm=""
if [ "${OOMTRAIL_SKIP_VM:-0}" != 1 ] && ls dist/test/vm/*.test.js >/dev/null 2>&1; then
  for f in dist/test/vm/*.test.js; do
    if [ "$f" = dist/test/vm/package.test.js ] && [ "${OOMTRAIL_VM_PACKAGE:-1}" != 0 ]; then pkgvm="$f"; else vm+=("$f"); fi
  done
fi
# the pinned Node.js LTS (runtime/node.version) runs the tests, first in PATH: every agent a test spawns (`node`,
# process.execPath) and the VM guests' node are that runtime too
runtime="$(bash scripts/node-runtime.sh)"
export PATH="$runtime/bin:$PATH"
echo "[test] $((${#first[@]} + ${#vm[@]} + ${#last[@]})) test files in three runs (${#first[@]} + ${#vm[@]} + ${#last[@]})$([ -n "$pkgvm" ] && echo ", the package VM test beside the first"), node $(node --version) ($runtime)"
rc=0
# beside the spec output, each failed test's name and error go to a file printed at the end (a CI log is read from
# its tail; a failure of the first run is otherwise half an hour of output before it)
fail_dir="${TMPDIR:-/tmp}/oomtrail-test-failures"
rm -rf "$fail_dir" && mkdir -p "$fail_dir"
reporters() { echo "--test-reporter=spec --test-reporter-destination=stdout --test-reporter=./dist/test/helpers/failure-reporter.js --test-reporter-destination=$fail_dir/$1"; }
# The package VM test (a systemd guest per Debian release, ~9 min of emulation alone) runs beside the host files:
# they leave a core mostly idle (waits on servers, containers, kills). Niced, so the host tests keep their CPU; its
# guests only install, kill, reboot and upgrade, nothing in them is timed tighter than minutes.
pkg_log="${TMPDIR:-/tmp}/oomtrail-test-package-vm.log"
pkg_pid=""
if [ -n "$pkgvm" ]; then
  rm -f "$pkg_log" "$pkg_log.rc"
  # shellcheck disable=SC2086 # the reporter options are words
  setsid bash -c 'nice -n 10 node --test --test-concurrency=1 $3 "$1" > "$2" 2>&1; echo $? > "$2.rc"' _ "$pkgvm" "$pkg_log" "$(reporters 0-package-vm)" &
  pkg_pid=$!
  pkg_t0=$SECONDS
  trap '[ -n "$pkg_pid" ] && kill -- "-$pkg_pid" 2>/dev/null || true' EXIT
  echo "[test] package VM test started beside the host files (nice 10; its output follows the first run; log $pkg_log)"
fi
# run_files <label> <files...>: one node --test run, its own exit code printed; any failure's code kept in rc
run_files() {
  local label=$1 t1=$SECONDS r=0
  runs=$((runs + 1))
  shift
  # shellcheck disable=SC2046 # the reporter options are words
  node --test --test-concurrency=1 $(reporters "$runs-${label%% *}") "$@" || r=$?
  [ "$r" = 0 ] || rc=$r
  echo "[test] $label $((SECONDS - t1)) s, exit $r"
}
runs=0
run_files "first run (host files without Loki)" "${first[@]}"
if [ -n "$pkg_pid" ]; then
  t1=$SECONDS
  while kill -0 "$pkg_pid" 2>/dev/null; do
    echo "[test] waiting for the package VM test ($((SECONDS - pkg_t0)) s since its start): $(grep -E '^\[vm\] \[guest\]|^\[vm-run\]' "$pkg_log" | tail -1 | cut -c1-120)"
    sleep 30 & wait $! || true
  done
  wait "$pkg_pid" 2>/dev/null || true
  pkg_pid=""
  cat "$pkg_log"
  prc="$(cat "$pkg_log.rc" 2>/dev/null || echo 1)"
  [ "$prc" = 0 ] || rc=$prc
  echo "[test] package VM test $((SECONDS - pkg_t0)) s beside the first run (waited $((SECONDS - t1)) s after it), exit $prc"
fi
[ ${#vm[@]} -eq 0 ] || run_files "second run (VM)" "${vm[@]}"
if [ ${#k8s[@]} -gt 0 ]; then
  # the background build (or, if it failed, a build now): a no-op when cached
  t1=$SECONDS
  echo "[test] kube-apiserver and etcd for the Kubernetes files: $(tail -1 "${TMPDIR:-/tmp}/oomtrail-setup-bg/kubernetes.log" 2>/dev/null | cut -c1-120)"
  r=0; bash test/servers/kubernetes/setup.sh || r=$?
  [ "$r" = 0 ] || rc=$r
  echo "[test] kube-apiserver and etcd ready after $((SECONDS - t1)) s of waiting, exit $r"
fi
[ ${#last[@]} -eq 0 ] || run_files "third run (Loki, Kubernetes)" "${last[@]}"
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
if [ -n "$(cat "$fail_dir"/* 2>/dev/null)" ]; then
  echo "[test] what failed, and why (each run's failures, in the order they ran):"
  for f in "$fail_dir"/*; do [ -s "$f" ] && { echo "[test] -- ${f##*/}"; head -c 20000 "$f"; }; done
fi
echo "[test] total $((SECONDS - t0)) s, exit $rc"
exit $rc
