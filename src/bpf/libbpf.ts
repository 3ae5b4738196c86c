import koffi from 'koffi';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** The raw libbpf.so.1 / libc functions oomtrail uses, bound once. Higher layers wrap their returns. */
export interface LibBpf {
  versionString(): string;
  /** libbpf's messages up to maxLevel (0 warn, 1 info, 2 debug; default all): the others are not even formatted. */
  setPrint(fn: ((level: number, message: string) => void) | null, maxLevel?: number): void;
  objectOpenFile(path: string): unknown | null;
  objectFindProgramByName(obj: unknown, name: string): unknown | null;
  objectFindMapFdByName(obj: unknown, name: string): number;
  objectLoad(obj: unknown): number;
  objectClose(obj: unknown): void;
  programSetAutoload(prog: unknown, autoload: boolean): number;
  programAttach(prog: unknown): unknown | null;
  linkDestroy(link: unknown): number;
  mapLookupElem(fd: number, key: Buffer, value: Buffer): number;
  /** Optional for backward compatibility with test doubles; 0, or -ENOENT after the last key. */
  mapGetNextKey?(fd: number, key: Buffer | null, next: Buffer): number;
  mapDeleteElem?(fd: number, key: Buffer): number;
  /** epoll for PSI triggers: many fds, one worker-thread wait; the callback runs on the main thread. */
  epollCreate?(): number;
  epollCtl?(epfd: number, op: number, fd: number, events: number, data: number): number;
  /** epoll_wait into a private buffer; ready holds (events, data) of each ready fd. */
  epollWaitEventsAsync?(epfd: number, max: number, timeoutMs: number, cb: (err: unknown, ready: Array<{ events: number; data: number }>) => void): void;
  close?(fd: number): number;
  /** A non-blocking eventfd (-1 on failure), and a write of 1 to it: wakes an epoll_wait that watches it. */
  eventfd?(): number;
  eventfdSignal?(fd: number): number;
  /** glibc malloc_trim(0): hands freed heap (libbpf's BTF parse at load) back to the kernel. */
  mallocTrim?(): number;
  /** pread(2) into buf from offset 0: bytes read, or < 0. ~0.7 us cheaper per call than fs.readSync. */
  pread?(fd: number, buf: Buffer, n: number): number;
  /** glibc mallopt(M_ARENA_MAX, n): fewer per-thread malloc arenas (each libuv/V8 thread would get one). */
  mallocArenaMax?(n: number): number;
  /**
   * _exit(2): ends the process with `code` at once, without exit handlers. `process.exit` runs them, and one joins
   * libuv's worker threads: a worker stuck in a sink's open or write (hung mount, FIFO) would hold the exit for ever.
   */
  exitNow?(code: number): never;
  /** bpf_program__attach_iter with a union bpf_iter_link_info (16 bytes) as its link_info. */
  programAttachIter?(prog: unknown, linkInfo: Buffer): unknown | null;
  linkFd?(link: unknown): number;
  /** bpf_iter_create: a readable fd that runs the iterator program as it is read */
  iterCreate?(linkFd: number): number;
  read?(fd: number, buf: Buffer, n: number): number;
  mapUpdateElem?(fd: number, key: Buffer, value: Buffer, flags: number): number;
  /** sysconf(_SC_PAGESIZE) */
  pageSize?(): number;
  /** mmap(MAP_SHARED, read/write) of an fd (a BPF_F_MMAPABLE array map): memory JS reads in place, or null */
  mmapShared?(fd: number, size: number): { view: ArrayBuffer; unmap(): void } | null;
  ringBufferNew(mapFd: number, sample: (data: unknown, size: number) => number): unknown | null;
  ringBufferEpollFd(rb: unknown): number;
  ringBufferConsume(rb: unknown): number;
  ringBufferFree(rb: unknown): void;
  /** epoll_wait on a libuv worker thread; the callback runs on the main thread. */
  epollWaitAsync(epfd: number, timeoutMs: number, cb: (err: unknown, ret: number) => void): void;
  clockGettimeNs(clock: 'realtime' | 'boottime'): bigint;
  errno(): number;
}

const CLOCK_REALTIME = 0;
const CLOCK_BOOTTIME = 7;

let cached: LibBpf | undefined;

/**
 * The package's private copy first (/usr/lib/oomtrail/lib/libbpf.so.1 beside dist/): loaded by path, so a host
 * without libbpf1 (Debian 11, Ubuntu 22.04) or with another build of it does not matter. Else (a clone, the image)
 * the system's, by soname.
 */
export function libbpfToLoad(root = path.resolve(__dirname, '../../..')): string {
  const bundled = path.join(root, 'lib', 'libbpf.so.1');
  return existsSync(bundled) ? bundled : 'libbpf.so.1';
}

/** The file the loaded libbpf was mapped from (/proc/self/maps), or null before the load / if unreadable. */
export function loadedLibbpfPath(maps = '/proc/self/maps'): string | null {
  try {
    const m = /^\S+ \S+ \S+ \S+ \S+ +(\/\S*\/libbpf\.so[.\d]*)$/m.exec(readFileSync(maps, 'utf8'));
    return m ? m[1] : null;
  } catch {
    return null;
  }
}

export function loadLibBpf(): LibBpf {
  if (cached) return cached;
  const lib = koffi.load(libbpfToLoad());
  const libc = koffi.load('libc.so.6');

  const printFn = koffi.proto('int libbpf_print_fn_t(int level, const char *fmt, void *args)');
  const sampleFn = koffi.proto('int ring_buffer_sample_fn(void *ctx, void *data, size_t size)');
  koffi.struct('oomtrail_timespec', { tv_sec: 'int64_t', tv_nsec: 'int64_t' });

  const versionString = lib.func('const char *libbpf_version_string(void)');
  const setPrint = lib.func('void *libbpf_set_print(libbpf_print_fn_t *fn)');
  const openFile = lib.func('void *bpf_object__open_file(const char *path, void *opts)');
  const findProg = lib.func('void *bpf_object__find_program_by_name(void *obj, const char *name)');
  const findMapFd = lib.func('int bpf_object__find_map_fd_by_name(void *obj, const char *name)');
  const objLoad = lib.func('int bpf_object__load(void *obj)');
  const objClose = lib.func('void bpf_object__close(void *obj)');
  const setAutoload = lib.func('int bpf_program__set_autoload(void *prog, bool autoload)');
  const attach = lib.func('void *bpf_program__attach(void *prog)');
  const linkDestroy = lib.func('int bpf_link__destroy(void *link)');
  const lookup = lib.func('int bpf_map_lookup_elem(int fd, void *key, void *value)');
  const getNextKey = lib.func('int bpf_map_get_next_key(int fd, void *key, void *next_key)');
  const deleteElem = lib.func('int bpf_map_delete_elem(int fd, void *key)');
  const updateElem = lib.func('int bpf_map_update_elem(int fd, void *key, void *value, uint64_t flags)');
  const mmap = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)');
  const munmap = libc.func('int munmap(void *addr, size_t length)');
  koffi.struct('oomtrail_iter_attach_opts', { sz: 'size_t', link_info: 'void *', link_info_len: 'uint32_t' });
  const attachIter = lib.func('void *bpf_program__attach_iter(void *prog, const oomtrail_iter_attach_opts *opts)');
  const linkFd = lib.func('int bpf_link__fd(void *link)');
  const iterCreate = lib.func('int bpf_iter_create(int link_fd)');
  const readFd = libc.func('long read(int fd, void *buf, size_t count)');
  const sysconf = libc.func('long sysconf(int name)');
  const epollCreate1 = libc.func('int epoll_create1(int flags)');
  const epollCtl = libc.func('int epoll_ctl(int epfd, int op, int fd, void *event)');
  const closeFd = libc.func('int close(int fd)');
  const eventfd = libc.func('int eventfd(unsigned int initval, int flags)');
  const writeFd = libc.func('long write(int fd, const void *buf, size_t count)');
  const mallocTrim = libc.func('int malloc_trim(size_t pad)');
  const mallopt = libc.func('int mallopt(int param, int value)');
  const exitImmediately = libc.func('void _exit(int status)');
  const pread = libc.func('long pread(int fd, void *buf, size_t count, long offset)');
  const one = Buffer.alloc(8);
  one.writeBigUInt64LE(1n);
  const rbNew = lib.func('void *ring_buffer__new(int map_fd, ring_buffer_sample_fn *cb, void *ctx, void *opts)');
  const rbEpollFd = lib.func('int ring_buffer__epoll_fd(void *rb)');
  const rbConsume = lib.func('int ring_buffer__consume(void *rb)');
  const rbFree = lib.func('void ring_buffer__free(void *rb)');
  const vsnprintf = libc.func('int vsnprintf(char *buf, size_t size, const char *fmt, void *ap)');
  const epollWait = libc.func('int epoll_wait(int epfd, void *events, int maxevents, int timeout)');
  const clockGettime = libc.func('int clock_gettime(int clk, _Out_ oomtrail_timespec *ts)');

  let printCallback: bigint | null = null;
  // Kept referenced for the ring buffer's lifetime: koffi frees unregistered callbacks.
  const sampleCallbacks = new Set<bigint>();
  const epollEvents = Buffer.alloc(12 * 4);
  // verifier logs arrive as one message of up to a few hundred kB
  const printBuffer = Buffer.alloc(1 << 20);

  cached = {
    versionString: () => versionString(),
    setPrint(fn, maxLevel = 2) {
      if (printCallback) koffi.unregister(printCallback);
      printCallback = null;
      if (!fn) {
        setPrint(null);
        return;
      }
      // libbpf logs from the thread that called it: only open/load/attach, always the main thread.
      printCallback = koffi.register((level: number, fmt: string, args: unknown) => {
        if (level > maxLevel) return 0;
        const buf = printBuffer;
        const n = Number(vsnprintf(buf, buf.length, fmt, args));
        fn(level, buf.toString('utf8', 0, Math.max(0, Math.min(n, buf.length - 1))).trimEnd());
        return 0;
      }, koffi.pointer(printFn));
      setPrint(printCallback);
    },
    objectOpenFile: (path) => openFile(path, null),
    objectFindProgramByName: (obj, name) => findProg(obj, name),
    objectFindMapFdByName: (obj, name) => findMapFd(obj, name),
    objectLoad: (obj) => objLoad(obj),
    objectClose: (obj) => objClose(obj),
    programSetAutoload: (prog, autoload) => setAutoload(prog, autoload),
    programAttach: (prog) => attach(prog),
    linkDestroy: (link) => linkDestroy(link),
    mapLookupElem: (fd, key, value) => lookup(fd, key, value),
    mapGetNextKey: (fd, key, next) => getNextKey(fd, key, next),
    mapDeleteElem: (fd, key) => deleteElem(fd, key),
    mapUpdateElem: (fd, key, value, flags) => updateElem(fd, key, value, flags),
    mmapShared(fd, size) {
      const p = mmap(null, size, 3 /* PROT_READ | PROT_WRITE */, 1 /* MAP_SHARED */, fd, 0);
      if (!p || koffi.address(p) === 0xffffffffffffffffn /* MAP_FAILED */) return null;
      return { view: koffi.view(p, size), unmap: () => munmap(p, size) };
    },
    programAttachIter: (prog, linkInfo) => attachIter(prog, { sz: koffi.sizeof('oomtrail_iter_attach_opts'), link_info: linkInfo, link_info_len: linkInfo.length }),
    linkFd: (link) => linkFd(link),
    iterCreate: (fd) => iterCreate(fd),
    read: (fd, buf, n) => Number(readFd(fd, buf, n)),
    pageSize: () => Number(sysconf(30 /* _SC_PAGESIZE */)),
    epollCreate: () => epollCreate1(0o2000000 /* EPOLL_CLOEXEC */),
    epollCtl(epfd, op, fd, events, data) {
      // struct epoll_event is packed on x86-64: u32 events, u64 data
      const ev = Buffer.alloc(12);
      ev.writeUInt32LE(events >>> 0, 0);
      ev.writeBigUInt64LE(BigInt(data), 4);
      return epollCtl(epfd, op, fd, ev);
    },
    epollWaitEventsAsync(epfd, max, timeoutMs, cb) {
      const buf = Buffer.alloc(12 * max);
      epollWait.async(epfd, buf, max, timeoutMs, (err: unknown, ret: number) => {
        const ready: Array<{ events: number; data: number }> = [];
        for (let i = 0; i < Number(ret); i++) ready.push({ events: buf.readUInt32LE(12 * i), data: Number(buf.readBigUInt64LE(12 * i + 4)) });
        cb(err, Number(ret) < 0 ? [] : ready);
      });
    },
    close: (fd) => closeFd(fd),
    eventfd: () => eventfd(0, 0o2000000 /* EFD_CLOEXEC */ | 0o4000 /* EFD_NONBLOCK */),
    eventfdSignal: (fd) => Number(writeFd(fd, one, 8)),
    mallocTrim: () => mallocTrim(0),
    mallocArenaMax: (n) => mallopt(-8 /* M_ARENA_MAX */, n),
    exitNow: (code) => {
      exitImmediately(code);
      throw new Error('_exit returned');
    },
    pread: (fd, buf, n) => Number(pread(fd, buf, n, 0)),
    ringBufferNew(mapFd, sample) {
      const cb = koffi.register((_ctx: unknown, data: unknown, size: number) => sample(data, Number(size)), koffi.pointer(sampleFn));
      sampleCallbacks.add(cb);
      const rb = rbNew(mapFd, cb, null, null);
      if (!rb) {
        koffi.unregister(cb);
        sampleCallbacks.delete(cb);
      }
      return rb;
    },
    ringBufferEpollFd: (rb) => rbEpollFd(rb),
    ringBufferConsume: (rb) => rbConsume(rb),
    ringBufferFree: (rb) => rbFree(rb),
    epollWaitAsync(epfd, timeoutMs, cb) {
      epollWait.async(epfd, epollEvents, 4, timeoutMs, cb);
    },
    clockGettimeNs(clock) {
      const ts = { tv_sec: 0, tv_nsec: 0 };
      clockGettime(clock === 'realtime' ? CLOCK_REALTIME : CLOCK_BOOTTIME, ts);
      return BigInt(ts.tv_sec) * 1_000_000_000n + BigInt(ts.tv_nsec);
    },
    errno: () => koffi.errno(),
  };
  return cached;
}

/** Copies `size` bytes at a native pointer handed to a ring-buffer callback. */
export function copyNative(ptr: unknown, size: number): Buffer {
  return Buffer.from(koffi.view(ptr, size).slice(0));
}
