#!/usr/bin/env bash
# Rebuilds the committed CO-RE objects bpf/*.bpf.o (oomkill, reclaim, alloc). Hosts never need this: the objects are in git.
# Needs clang, bpftool and libbpf-dev (apt-get install clang llvm libbpf-dev bpftool).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -s bpf/vmlinux.h ]; then
  echo "generating bpf/vmlinux.h from /sys/kernel/btf/vmlinux"
  bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h
fi
for src in bpf/*.bpf.c; do
  obj="${src%.c}.o"
  echo "clang -target bpf $src -> $obj"
  # the checkout's path is kept out of the BTF strings: the same source builds the same object in any clone
  clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -fdebug-prefix-map="$PWD"=. -ffile-prefix-map="$PWD"=. -Wall -Werror -I bpf -c "$src" -o "$obj.tmp"
  # strip DWARF (BTF stays): a smaller object in git, identical behaviour
  llvm-strip -g "$obj.tmp" 2>/dev/null || true
  mv "$obj.tmp" "$obj"
done
