# Sourced by build-initramfs.sh and build-rootinit.sh: resolve kernel modules of a kernel unpacked by
# fetch-kernel.sh, dependencies first (from each module's .modinfo depends=, no depmod needed).
#
#   mod_add NAME   appends its dependencies, then itself, to the array MOD_FILES (paths of plain .ko files)
# Needs MODROOT (…/modules/<version>) and ICACHE (where xz-packed modules are unpacked); a built-in module
# (modules.builtin) adds nothing. Uses log() of the caller.
declare -A MOD_SEEN=()
mod_add() { # name: append its dependencies, then itself, to MOD_FILES
  local n="${1//-/_}" f d
  [[ -n "${MOD_SEEN[$n]:-}" ]] && return 0
  MOD_SEEN[$n]=1
  # trixie ships xz-compressed modules: unpacked on the way in (busybox insmod takes plain .ko)
  f="$(find "$MODROOT" \( -name "$n.ko" -o -name "${n//_/-}.ko" -o -name "$n.ko.xz" -o -name "${n//_/-}.ko.xz" \) | head -n1)"
  if [[ "$f" == *.xz ]]; then
    mkdir -p "$ICACHE/modules-$(basename "$MODROOT")"
    local plain="$ICACHE/modules-$(basename "$MODROOT")/$(basename "${f%.xz}")"
    [[ -f "$plain" ]] || xz -dc "$f" > "$plain"
    f="$plain"
  fi
  if [[ -z "$f" ]]; then
    grep -q "/$n.ko" "$MODROOT/modules.builtin" 2>/dev/null && return 0
    log "kernel module $n not found in $MODROOT"; return 1
  fi
  for d in $(objcopy -O binary -j .modinfo "$f" /dev/stdout | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do
    mod_add "$d"
  done
  MOD_FILES+=("$f")
}
