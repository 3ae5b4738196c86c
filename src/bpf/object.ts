import { BpfError, checkPointer, checkStatus } from './errors';
import { copyNative, loadLibBpf, type LibBpf } from './libbpf';

/**
 * One opened CO-RE object with only the named programs set to load. Owns its links;
 * `close()` detaches and frees everything and is safe to call twice.
 */
export class BpfObject {
  private obj: unknown | null;
  private readonly links: unknown[] = [];
  private readonly mappings: Array<() => void> = [];
  private readonly lib: LibBpf;

  private constructor(lib: LibBpf, obj: unknown) {
    this.lib = lib;
    this.obj = obj;
  }

  /** `maxEntries`: maps sized here before load (a ring buffer's bytes), e.g. `{ events: 1 << 24 }`. */
  static open(path: string, programs: readonly string[], allPrograms: readonly string[], maxEntries: Record<string, number> = {}): BpfObject {
    const lib = loadLibBpf();
    const obj = checkPointer('bpf_object__open_file', lib.objectOpenFile(path), lib.errno, path);
    const self = new BpfObject(lib, obj);
    try {
      for (const name of allPrograms) {
        const prog = self.program(name);
        checkStatus('bpf_program__set_autoload', lib.programSetAutoload(prog, programs.includes(name)), name);
      }
      for (const [map, n] of Object.entries(maxEntries)) {
        if (!lib.mapSetMaxEntries) throw new BpfError('bpf_map__set_max_entries', 38 /* ENOSYS */, 'binding missing');
        checkStatus('bpf_map__set_max_entries', lib.mapSetMaxEntries(obj, map, n), map);
      }
    } catch (err) {
      self.close();
      throw err;
    }
    return self;
  }

  private program(name: string): unknown {
    return checkPointer('bpf_object__find_program_by_name', this.lib.objectFindProgramByName(this.live(), name), () => 2, name);
  }

  private live(): unknown {
    if (!this.obj) throw new BpfError('bpf_object', 9 /* EBADF */, 'object already closed');
    return this.obj;
  }

  load(): void {
    try {
      checkStatus('bpf_object__load', this.lib.objectLoad(this.live()));
    } finally {
      // the load parsed the kernel's BTF (~12 MB malloc'd, freed by now): hand it back before the next
      // object parses it again, so the agent's RSS does not keep the high-water mark of every load
      this.lib.mallocTrim?.();
    }
  }

  attach(programName: string): void {
    const link = checkPointer('bpf_program__attach', this.lib.programAttach(this.program(programName)), this.lib.errno, programName);
    this.links.push(link);
  }

  /** Attaches an iterator program (`link_info`: its union bpf_iter_link_info); returns the link's fd for `runIter`. */
  attachIter(programName: string, linkInfo: Buffer): number {
    const { programAttachIter, linkFd } = this.lib;
    if (!programAttachIter || !linkFd) throw new BpfError('bpf_program__attach_iter', 38 /* ENOSYS */, 'binding missing');
    const link = checkPointer('bpf_program__attach_iter', programAttachIter(this.program(programName), linkInfo), this.lib.errno, programName);
    this.links.push(link);
    return checkStatus('bpf_link__fd', linkFd(link), programName);
  }

  /** One pass of an attached iterator: creates its fd, reads it to the end (output discarded), closes it. */
  runIter(linkFd: number, scratch: Buffer): void {
    const fd = checkStatus('bpf_iter_create', this.lib.iterCreate!(linkFd));
    try {
      for (;;) {
        const n = this.lib.read!(fd, scratch, scratch.length);
        if (n === 0) return;
        if (n < 0) throw new BpfError('read(bpf_iter)', this.lib.errno());
      }
    } finally {
      this.lib.close!(fd);
    }
  }

  /** Inserts or overwrites one element (flags: BPF_ANY 0, BPF_NOEXIST 1). */
  update(mapName: string, key: Buffer, value: Buffer, flags = 0): void {
    const update = this.lib.mapUpdateElem;
    if (!update) throw new BpfError('bpf_map_update_elem', 38 /* ENOSYS */, 'binding missing');
    checkStatus('bpf_map_update_elem', update(this.mapFd(mapName), key, value, flags), mapName);
  }

  /**
   * A BPF_F_MMAPABLE array map's values as memory JS reads in place (no syscall per read). Unmapped by
   * close(): the view must not be touched after it.
   */
  mapMemory(mapName: string, size: number): ArrayBuffer {
    const mmap = this.lib.mmapShared;
    if (!mmap) throw new BpfError('mmap', 38 /* ENOSYS */, 'binding missing');
    const m = mmap(this.mapFd(mapName), size);
    if (!m) throw new BpfError('mmap', this.lib.errno(), mapName);
    this.mappings.push(m.unmap);
    return m.view;
  }

  mapFd(name: string): number {
    return checkStatus('bpf_object__find_map_fd_by_name', this.lib.objectFindMapFdByName(this.live(), name), name);
  }

  /** Sum of a one-entry u64 array map (e.g. a drop counter). */
  readCounter(mapName: string): bigint {
    const key = Buffer.alloc(4);
    const value = Buffer.alloc(8);
    checkStatus('bpf_map_lookup_elem', this.lib.mapLookupElem(this.mapFd(mapName), key, value), mapName);
    return value.readBigUInt64LE(0);
  }

  /**
   * Every (key, value) of a hash map, read on the calling (main) thread with get_next_key + lookup:
   * one pass per interval, however many kernel events were aggregated into it.
   */
  readMap(mapName: string, keySize: number, valueSize: number): Array<{ key: Buffer; value: Buffer }> {
    const fd = this.mapFd(mapName);
    const getNext = this.lib.mapGetNextKey;
    if (!getNext) throw new BpfError('bpf_map_get_next_key', 38 /* ENOSYS */, 'binding missing');
    const out: Array<{ key: Buffer; value: Buffer }> = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(keySize);
      const ret = getNext(fd, prev, next);
      if (ret === -2 /* ENOENT: past the last key */) break;
      checkStatus('bpf_map_get_next_key', ret, mapName);
      const value = Buffer.alloc(valueSize);
      // a key deleted between the two calls (LRU eviction) is skipped
      if (this.lib.mapLookupElem(fd, next, value) === 0) out.push({ key: next, value });
      prev = next;
    }
    return out;
  }

  /** true and `value` filled when the key exists. */
  lookup(mapName: string, key: Buffer, value: Buffer): boolean {
    return this.lib.mapLookupElem(this.mapFd(mapName), key, value) === 0;
  }

  deleteKey(mapName: string, key: Buffer): void {
    this.lib.mapDeleteElem?.(this.mapFd(mapName), key);
  }

  close(): void {
    for (const unmap of this.mappings.splice(0)) unmap();
    for (const link of this.links.splice(0)) this.lib.linkDestroy(link);
    if (this.obj) this.lib.objectClose(this.obj);
    this.obj = null;
  }
}

/**
 * Ring-buffer reader that never runs JS off the main thread: a libuv worker blocks in
 * epoll_wait on ring_buffer__epoll_fd, and the main thread then calls ring_buffer__consume,
 * whose callbacks therefore run on the main thread.
 */
export class RingBufferReader {
  private readonly lib = loadLibBpf();
  private rb: unknown | null;
  private readonly epfd: number;
  private stopped = false;
  private waiting = false;
  private stopWaiters: Array<() => void> = [];
  /** in the ring's epoll set: stop() writes it, so the wait needs no timeout (-1 when unavailable) */
  private wakeFd = -1;

  constructor(
    mapFd: number,
    private readonly onSample: (data: Buffer) => void,
    private readonly onError: (err: Error) => void,
    /** Awaited after each consume, before waiting again: back-pressure reaches the kernel's ring. */
    private readonly afterConsume: () => Promise<void> = async () => {},
    private readonly pollTimeoutMs = 200,
  ) {
    this.rb = checkPointer(
      'ring_buffer__new',
      this.lib.ringBufferNew(mapFd, (ptr, size) => {
        this.onSample(copyNative(ptr, size));
        return 0;
      }),
      this.lib.errno,
    );
    this.epfd = checkStatus('ring_buffer__epoll_fd', this.lib.ringBufferEpollFd(this.rb));
    // an idle agent then sleeps in epoll_wait until a record or stop() instead of waking 5 times a second
    const fd = this.lib.eventfd?.() ?? -1;
    if (fd >= 0 && (this.lib.epollCtl?.(this.epfd, 1 /* EPOLL_CTL_ADD */, fd, 1 /* EPOLLIN */, 0xffffffff) ?? -1) >= 0) this.wakeFd = fd;
    else if (fd >= 0) this.lib.close?.(fd);
  }

  /** Also wake for `fd` (readable): `onWake` runs after the consume that follows. */
  watch(fd: number, onWake: () => void): boolean {
    if ((this.lib.epollCtl?.(this.epfd, 1 /* EPOLL_CTL_ADD */, fd, 1 /* EPOLLIN */, fd) ?? -1) < 0) return false;
    this.wakeListeners.push(onWake);
    return true;
  }

  private readonly wakeListeners: Array<() => void> = [];

  start(): void {
    this.consume();
    void this.afterConsume().then(() => this.wait());
  }

  /** Told after each consume: how many events it handed over and how long it took (ms). */
  onConsumed: ((events: number, ms: number) => void) | null = null;

  /** Reads whatever is in the buffer now (main thread). */
  consume(): number {
    if (!this.rb) return 0;
    const t0 = process.hrtime.bigint();
    const n = checkStatus('ring_buffer__consume', this.lib.ringBufferConsume(this.rb));
    this.onConsumed?.(n, Number(process.hrtime.bigint() - t0) / 1e6);
    return n;
  }

  private wait(): void {
    if (this.stopped) return this.finish();
    this.waiting = true;
    this.lib.epollWaitAsync(this.epfd, this.wakeFd >= 0 ? -1 : this.pollTimeoutMs, (err, ret) => {
      this.waiting = false;
      if (this.stopped) return this.finish();
      void (async () => {
        try {
          if (err) throw err;
          if (Number(ret) < 0 && this.lib.errno() !== 4 /* EINTR */) throw new BpfError('epoll_wait', this.lib.errno());
          if (Number(ret) > 0) {
            this.consume();
            await this.afterConsume();
            for (const fn of this.wakeListeners) fn();
          }
        } catch (e) {
          this.onError(e instanceof Error ? e : new Error(String(e)));
        }
        this.wait();
      })();
    });
  }

  private finish(): void {
    if (this.waiting) return;
    // drain what arrived between the last wake-up and stop, then free
    if (this.rb) {
      try {
        this.consume();
      } catch (e) {
        this.onError(e as Error);
      }
      this.lib.ringBufferFree(this.rb);
      this.rb = null;
    }
    if (this.wakeFd >= 0) this.lib.close?.(this.wakeFd);
    this.wakeFd = -1;
    for (const w of this.stopWaiters.splice(0)) w();
  }

  /** Stops after the in-flight epoll_wait returns (woken at once, or within pollTimeoutMs without an eventfd) and drains the buffer. */
  stop(): Promise<void> {
    this.stopped = true;
    if (this.waiting && this.wakeFd >= 0) this.lib.eventfdSignal?.(this.wakeFd);
    const done = new Promise<void>((resolve) => this.stopWaiters.push(resolve));
    this.finish();
    return done;
  }
}
