/**
 * The descriptors the trail keeps open (cgroups' usage and memory.pressure files, PSI triggers),
 * counted against one budget (host/limits.ts trailFdBudget). A file that gets no descriptor is read by
 * path each step (open, read, close), so the trail never holds what the spool, ledger or sinks need.
 */
export class FdBudget {
  private used = 0;

  constructor(readonly max: number) {}

  /** One descriptor: false when the budget is spent (read by path instead). */
  take(): boolean {
    if (this.used >= this.max) return false;
    this.used++;
    return true;
  }

  give(): void {
    if (this.used > 0) this.used--;
  }

  get held(): number {
    return this.used;
  }

  get left(): number {
    return this.max - this.used;
  }
}
