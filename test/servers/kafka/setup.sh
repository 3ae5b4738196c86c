#!/usr/bin/env bash
# Resolves the Apache Kafka 4.1.1 broker (KRaft) the Kafka sink's integration tests, relay test and benchmark use:
#   pom.xml (kafka_2.13 + log4j-slf4j-impl) --mvn dependency:copy-dependencies--> 
#     ${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/kafka/4.1.1/lib/*.jar   (+ .stamp)
# The tests start brokers themselves (test/servers/kafka/server.ts). Needs java (17+) and mvn.
# Idempotent: a no-op when the stamp matches. Cold: ~46 jars, ~43 MB from Maven Central.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version=4.1.1
out="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/kafka/$version"
lib="$out/lib"
stamp="$out/.stamp"
want="$(sha256sum "$here/pom.xml" | cut -d' ' -f1)"
t0=$SECONDS

cached() { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && ls "$lib"/kafka_2.13-$version.jar >/dev/null 2>&1; }
if cached; then echo "[kafka] cached: $lib ($(ls "$lib" | wc -l) jars)"; exit 0; fi

for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "[kafka] $tool not found (install a JDK 17+ and Maven)" >&2; exit 1; }
done
mkdir -p "$out"
exec 9>"$out/.setup.lock"
echo "[kafka] waiting for the setup lock ($out/.setup.lock)"
flock 9
if cached; then echo "[kafka] cached: $lib ($(ls "$lib" | wc -l) jars)"; exit 0; fi

echo "[kafka] resolving kafka_2.13:$version + log4j-slf4j-impl from Maven Central into $lib"
rm -rf "$lib.tmp" "$stamp"
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$lib.tmp" -DincludeScope=runtime
rm -rf "$lib"
mv "$lib.tmp" "$lib"
echo "$want" > "$stamp"
echo "[kafka] $(ls "$lib" | wc -l) jars, $(du -sh "$lib" | cut -f1) in $((SECONDS - t0)) s"
