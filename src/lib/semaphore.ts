/** Caps concurrent work; `acquire` waits (never fails) while all permits are taken. */
export class Semaphore {
  private waiters: (() => void)[] = [];
  constructor(private permits: number) {}

  /** True when it had to wait. */
  async acquire(): Promise<boolean> {
    if (this.permits > 0) {
      this.permits--;
      return false;
    }
    await new Promise<void>((r) => this.waiters.push(r));
    return true;
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.permits++;
  }
}
