#!/usr/bin/env bash
# Rebuilds the committed CO-RE objects bpf/<arch>/<name>.bpf.o (oomkill, reclaim, alloc) for each architecture.
# Hosts never need this: the objects are in git.
#   scripts/build-bpf.sh [x86|arm64 ...]   (default: both)
#   scripts/build-bpf.sh --host            only the build host's architecture (the Dockerfile)
# Needs clang, bpftool and libbpf-dev (apt-get install clang llvm libbpf-dev bpftool).
#
# Why one object per architecture: kprobe arguments are read from struct pt_regs, whose layout is the
# architecture's (PT_REGS_PARM1 is ctx->di at offset 112 on x86, ctx->regs[0] at 0 on arm64) and is not relocated
# by CO-RE; libbpf's bpf_tracing.h picks it by __TARGET_ARCH_<arch>. Everything else is CO-RE or arch-neutral.
# Names are the kernel's (__TARGET_ARCH_x86, _arm64); the agent maps Node's process.arch onto them.
#
# bpf/<arch>/vmlinux.h (gitignored) comes from /sys/kernel/btf/vmlinux when the host runs that architecture,
# else from the BTF inside a Debian cloud kernel of it (test/vm/fetch-kernel.sh, OOMTRAIL_BPF_BTF_RELEASE,
# default trixie; scripts/kernel-btf.sh cuts the blob out of the image), cached beside that kernel.
set -euo pipefail
cd "$(dirname "$0")/.."

host_arch() {
  case "$(uname -m)" in x86_64) echo x86 ;; aarch64) echo arm64 ;; *) echo "unsupported build host $(uname -m)" >&2; exit 1 ;; esac
}
if [ "${1:-}" = --host ]; then archs=("$(host_arch)"); elif [ $# -gt 0 ]; then archs=("$@"); else archs=(x86 arm64); fi

# a vmlinux.h beside the sources would win over bpf/<arch>/ ("..." includes search the source's own directory first)
if [ -e bpf/vmlinux.h ]; then echo "removing the old single-architecture bpf/vmlinux.h"; rm -f bpf/vmlinux.h; fi

for arch in "${archs[@]}"; do
  case "$arch" in x86) deb=amd64 ;; arm64) deb=arm64 ;; *) echo "unknown arch '$arch' (x86|arm64)" >&2; exit 2 ;; esac
  mkdir -p "bpf/$arch"
  hdr="bpf/$arch/vmlinux.h"
  if [ ! -s "$hdr" ]; then
    if [ "$arch" = "$(host_arch)" ] && [ -r /sys/kernel/btf/vmlinux ]; then
      btf=/sys/kernel/btf/vmlinux
    else
      kdir="$(OOMTRAIL_VM_ARCH=$deb bash test/vm/fetch-kernel.sh "${OOMTRAIL_BPF_BTF_RELEASE:-sid}" | tail -n1)"
      btf="$kdir/btf"
      [ -s "$btf" ] || bash scripts/kernel-btf.sh "$kdir/vmlinuz" "$btf"
    fi
    echo "generating $hdr from $btf"
    bpftool btf dump file "$btf" format c > "$hdr.tmp"
    mv "$hdr.tmp" "$hdr"
  fi
  for src in bpf/*.bpf.c; do
    name="$(basename "${src%.c}")"
    obj="bpf/$arch/$name.o"
    echo "clang -target bpf -D__TARGET_ARCH_$arch $src -> $obj"
    # the checkout's path is kept out of the BTF strings: the same source builds the same object in any clone;
    # bpf/<arch> first: its vmlinux.h
    clang -g -O2 -target bpf "-D__TARGET_ARCH_$arch" -fdebug-prefix-map="$PWD"=. -ffile-prefix-map="$PWD"=. -Wall -Werror -fms-extensions -Wno-microsoft-anon-tag \
      -I "bpf/$arch" -I bpf -c "$src" -o "$obj.tmp"
    # strip DWARF (BTF stays): a smaller object in git, identical behaviour
    llvm-strip -g "$obj.tmp" 2>/dev/null || true
    mv "$obj.tmp" "$obj"
  done
done
