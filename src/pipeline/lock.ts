import fs from 'node:fs';
import path from 'node:path';
import koffi from 'koffi';

export type SpoolLockErrorCode = 'SPOOL_LOCKED' | 'SPOOL_LOCK_IO';

export class SpoolLockError extends Error {
  readonly retriable = false;
  constructor(
    readonly code: SpoolLockErrorCode,
    message: string,
    /** pid written by the process holding the lock, when it could be read */
    readonly holderPid: number | null = null,
  ) {
    super(message);
    this.name = 'SpoolLockError';
  }
}

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

let flockFn: ((fd: number, op: number) => number) | undefined;

function flock(fd: number, op: number): number {
  if (!flockFn) flockFn = koffi.load('libc.so.6').func('int flock(int fd, int op)') as (fd: number, op: number) => number;
  return flockFn(fd, op);
}

/** The file inside the spool directory that one agent holds locked while it runs. */
export const LOCK_FILE = 'agent.lock';

/**
 * An exclusive flock(2) on `<dir>/agent.lock`, held while the agent runs. The kernel drops it when
 * the process dies however it dies, so a stale lock cannot outlive a crash (unlike a pid file), and
 * pid reuse cannot fool it. The holder's pid is written into the file only to name it.
 */
export class DirLock {
  private constructor(
    private fd: number | null,
    readonly file: string,
  ) {}

  /** Takes the lock or throws {@link SpoolLockError} `SPOOL_LOCKED` naming the holder's pid. */
  static acquire(dir: string): DirLock {
    const file = path.join(dir, LOCK_FILE);
    let fd: number;
    try {
      // the state directory: records and the ledger in it name every tenant's commands and cgroups
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      // O_CLOEXEC is Node's default: a spawned child never inherits (and so never keeps) the lock
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
      // the mode is masked by the umask only at creation; a file an older version made is fixed here
      fs.fchmodSync(fd, 0o600);
    } catch (err) {
      throw new SpoolLockError('SPOOL_LOCK_IO', `cannot open lock file ${file}: ${(err as Error).message}`);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      const errno = koffi.errno();
      let holder: number | null = null;
      try {
        const text = fs.readFileSync(file, 'utf8').trim();
        if (/^\d+$/.test(text)) holder = Number(text);
      } catch {
        /* the pid only names the holder */
      }
      fs.closeSync(fd);
      if (errno === EWOULDBLOCK) {
        throw new SpoolLockError(
          'SPOOL_LOCKED',
          `spool directory ${dir} is in use by another oomtrail agent (pid ${holder ?? 'unknown'}); ` +
            'two agents on one spool would deliver and delete each other\'s records',
          holder,
        );
      }
      throw new SpoolLockError('SPOOL_LOCK_IO', `cannot lock ${file}: errno ${errno}`);
    }
    try {
      fs.ftruncateSync(fd, 0);
      fs.writeSync(fd, `${process.pid}\n`, 0);
    } catch {
      /* the lock holds without the pid in it */
    }
    return new DirLock(fd, file);
  }

  /**
   * Whether another process holds the lock, asked without creating anything (`oomtrail check`): the holder's pid
   * (or 0 when it cannot be read) if held, null if free or absent.
   */
  static holder(dir: string): number | null {
    let fd: number;
    try {
      fd = fs.openSync(path.join(dir, LOCK_FILE), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch {
      return null;
    }
    try {
      if (flock(fd, LOCK_EX | LOCK_NB) === 0) return null; // closing the descriptor below drops it again
      if (koffi.errno() !== EWOULDBLOCK) return null;
      const text = fs.readFileSync(fd, 'utf8').trim();
      return /^\d+$/.test(text) ? Number(text) : 0;
    } catch {
      return 0;
    } finally {
      fs.closeSync(fd);
    }
  }

  release(): void {
    if (this.fd === null) return;
    // closing the last descriptor drops the flock
    fs.closeSync(this.fd);
    this.fd = null;
  }
}
