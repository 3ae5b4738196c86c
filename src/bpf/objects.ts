import path from 'node:path';

/**
 * Which committed CO-RE object this host loads. kprobe programs read their arguments from struct pt_regs, whose
 * layout is the architecture's and is not relocated by CO-RE, so scripts/build-bpf.sh builds one object per
 * architecture: bpf/<arch>/<name>.bpf.o, <arch> being the kernel's name (__TARGET_ARCH_x86, _arm64). The same
 * relative layout holds in the dev tree and in the package (/usr/lib/oomtrail/{dist,bpf}).
 */
export type BpfObjectName = 'oomkill' | 'reclaim' | 'alloc';

/** Node's process.arch -> the kernel's architecture name the objects are built for. */
const KERNEL_ARCH: Record<string, string> = { x64: 'x86', arm64: 'arm64' };

/** dist/src/bpf -> the project (or package) root's bpf/ */
export const BPF_DIR = path.resolve(__dirname, '../../../bpf');

/**
 * The object for `nodeArch` (default: this process's). An architecture without objects keeps its own name:
 * opening bpf/<that>/… then fails naming the missing file, not silently loading another architecture's kprobes.
 */
export function bpfObjectPath(name: BpfObjectName, nodeArch: string = process.arch, dir: string = BPF_DIR): string {
  return path.join(dir, KERNEL_ARCH[nodeArch] ?? nodeArch, `${name}.bpf.o`);
}

export function bpfArchSupported(nodeArch: string = process.arch): boolean {
  return nodeArch in KERNEL_ARCH;
}
