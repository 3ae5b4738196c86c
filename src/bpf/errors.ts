import { constants } from 'node:os';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}
// the kernel-internal ENOTSUPP (not in libc): what attaching fentry returns where the kernel has no BPF trampoline
// for the function (e.g. arm64 kernels without ftrace direct calls)
if (!errnoNames.has(524)) errnoNames.set(524, 'ENOTSUPP');

export function errnoName(errno: number): string {
  return errnoNames.get(Math.abs(errno)) ?? `E#${Math.abs(errno)}`;
}

/** A failed libbpf or syscall operation: `op` names the call, `errno` the kernel's reason. */
export class BpfError extends Error {
  readonly code: string;
  readonly retriable = false;
  constructor(
    readonly op: string,
    readonly errno: number,
    detail?: string,
  ) {
    super(`${op} failed: ${errnoName(errno)}${detail ? ` (${detail})` : ''}`);
    this.name = 'BpfError';
    this.code = errnoName(errno);
  }
}

/** libbpf 1.x returns -errno from int functions; wrap every such return exactly once here. */
export function checkStatus(op: string, ret: number, detail?: string): number {
  if (ret < 0) throw new BpfError(op, -ret, detail);
  return ret;
}

/** libbpf 1.x returns NULL and sets errno from pointer-returning functions. */
export function checkPointer<T>(op: string, ptr: T | null, errno: () => number, detail?: string): T {
  if (ptr === null || ptr === undefined) throw new BpfError(op, errno() || 22, detail);
  return ptr;
}
