#!/usr/bin/env bash
# Installs the two real ClickHouse servers the ClickHouse sink's integration tests and benchmark use:
#   1. Debian's clickhouse-server (18.16.1, a real server over HTTP)   -> /usr/sbin/clickhouse-server (apt)
#   2. chdb-core (the current ClickHouse engine, in-process, from PyPI) in a Python venv:
#        ${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/clickhouse/chdb-core-<version>/venv   (+ .stamp)
#      served over HTTP by test/servers/clickhouse/chdb_http.py (the tests start it themselves).
# Idempotent: a no-op (well under a second) when both are present. Cold: apt ~8 s (~40 MB of .debs),
# wheel download ~8 s (182 MB, kept in .../clickhouse/wheels), venv + install ~15 s.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
chdb_version="${CHDB_CORE_VERSION:-26.9.0}"
root="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/clickhouse"
out="$root/chdb-core-$chdb_version"
venv="$out/venv"
stamp="$out/.stamp"
t0=$SECONDS

# --- 1. clickhouse-server from Debian ------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need=()
installed clickhouse-server || need+=(clickhouse-server)
# the venv module of Debian's python3 (ensurepip) lives in python3-venv
if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; else py="$(command -v python3 || true)"; fi
if [ -z "$py" ]; then need+=(python3 python3-venv); py=/usr/bin/python3
elif [ "$py" = /usr/bin/python3 ] && ! installed python3-venv; then need+=(python3-venv); fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "[clickhouse] need root to install: ${need[*]}" >&2; exit 1; fi
  echo "[clickhouse] apt-get install ${need[*]}"
  apt-get update -qq
  # the package's postinst tries to start the service; policy-rc.d / no systemd keeps it from running,
  # and the tests never use that instance (they start their own servers on free ports)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  echo "[clickhouse] apt done in $((SECONDS - t0)) s"
fi
if [ ! -x /usr/sbin/clickhouse-server ]; then echo "[clickhouse] /usr/sbin/clickhouse-server missing after install" >&2; exit 1; fi
echo "[clickhouse] clickhouse-server: $(dpkg-query -W -f='${Version}' clickhouse-server)"

# --- 2. chdb-core in a venv ----------------------------------------------------------------------------------
want="chdb-core==$chdb_version $("$py" -c 'import sys; print(sys.version.split()[0])') $py"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[clickhouse] chdb cached: $venv (chdb-core $chdb_version)"
  exit 0
fi

mkdir -p "$root/wheels" "$out"
exec 9>"$root/.setup.lock"
echo "[clickhouse] waiting for the setup lock ($root/.setup.lock)"
flock 9
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[clickhouse] chdb cached: $venv (chdb-core $chdb_version)"
  exit 0
fi

t1=$SECONDS
wheel="$(ls "$root"/wheels/chdb_core-"$chdb_version"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ]; then
  echo "[clickhouse] downloading chdb-core $chdb_version from PyPI (~182 MB) into $root/wheels"
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --progress-bar off -d "$root/wheels" "chdb-core==$chdb_version"
  wheel="$(ls "$root"/wheels/chdb_core-"$chdb_version"-*.whl | head -1)"
  echo "[clickhouse] downloaded $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) in $((SECONDS - t1)) s"
fi

t2=$SECONDS
rm -rf "$venv" "$stamp"
echo "[clickhouse] creating venv $venv ($py)"
"$py" -m venv "$venv"
echo "[clickhouse] pip install --no-deps $(basename "$wheel")"
"$venv/bin/pip" install --quiet --no-deps --no-index --disable-pip-version-check "$wheel"
engine="$("$venv/bin/python" -c 'import chdb; print(chdb.connect(":memory:").query("SELECT version()", "TSV").bytes().decode().strip())')"
echo "$want" > "$stamp"
echo "[clickhouse] chdb-core $chdb_version (ClickHouse $engine) ready in $((SECONDS - t2)) s; venv $(du -sh "$venv" | cut -f1)"
echo "[clickhouse] done in $((SECONDS - t0)) s"
