#!/usr/bin/env bash
# The kernel's BTF (what /sys/kernel/btf/vmlinux shows on a running kernel) cut out of a kernel image file, for a
# kernel that does not run here (another architecture's). An arm64 vmlinuz is a raw Image (or its gzip) with no
# section table: the .BTF blob is found by its header (magic 0xeB9F, version 1, hdr_len 24) and its own lengths,
# then checked by bpftool (it parses every type).
#   scripts/kernel-btf.sh <vmlinuz> <out.btf>
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 <vmlinuz> <out.btf>" >&2; exit 2; }
img="$1" out="$2"
node - "$img" "$out.tmp" <<'EOF'
const fs = require('fs');
const zlib = require('zlib');
const [img, out] = process.argv.slice(2);
let b = fs.readFileSync(img);
if (b[0] === 0x1f && b[1] === 0x8b) b = zlib.gunzipSync(b);
// struct btf_header: u16 magic, u8 version, u8 flags, u32 hdr_len, u32 type_off, u32 type_len, u32 str_off, u32 str_len
const head = Buffer.from([0x9f, 0xeb, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
const found = [];
for (let at = b.indexOf(head); at >= 0; at = b.indexOf(head, at + 1)) {
  const typeLen = b.readUInt32LE(at + 12), strOff = b.readUInt32LE(at + 16), strLen = b.readUInt32LE(at + 20);
  // vmlinux BTF: strings right after the types, string 0 is "", the whole blob inside the image
  const end = at + 24 + strOff + strLen;
  if (strOff !== typeLen || strLen === 0 || end > b.length || b[at + 24 + strOff] !== 0) continue;
  found.push([at, end]);
}
// the kernel's own BTF is the big one (a few MB); anything else matching is a stray byte pattern
found.sort((x, y) => (y[1] - y[0]) - (x[1] - x[0]));
if (!found.length || found[0][1] - found[0][0] < 1 << 20) { console.error(`no .BTF blob in ${img}`); process.exit(1); }
fs.writeFileSync(out, b.subarray(found[0][0], found[0][1]));
console.error(`[kernel-btf] .BTF at image offset 0x${found[0][0].toString(16)}, ${found[0][1] - found[0][0]} bytes`);
EOF
# bpftool parses every type: a truncated or wrong blob fails here, not in clang later
n="$(bpftool btf dump file "$out.tmp" | grep -c '^\[')"
[ "$n" -gt 10000 ] || { echo "[kernel-btf] only $n types in the blob from $img" >&2; exit 1; }
grep -q . <(bpftool btf dump file "$out.tmp" | grep -m1 "STRUCT 'task_struct'") || { echo "[kernel-btf] no task_struct in the blob" >&2; exit 1; }
mv "$out.tmp" "$out"
echo "[kernel-btf] $n types -> $out" >&2
