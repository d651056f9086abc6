/**
 * Full-jitter exponential backoff: the n-th retry waits a uniformly random time in
 * [0, min(cap, base · 2^n)). The randomness spreads out clients that lost the same server at
 * the same moment, so they do not all come back in one burst when it restarts.
 */

export interface BackoffOptions {
  /** The ceiling of the first delay, in milliseconds. */
  baseMs?: number;
  /** The largest ceiling, in milliseconds. */
  capMs?: number;
  /** A source of numbers in [0, 1); Math.random unless a test pins it. */
  random?: () => number;
}

export class Backoff {
  private readonly baseMs: number;
  private readonly capMs: number;
  private readonly random: () => number;
  private attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? 500;
    this.capMs = options.capMs ?? 30_000;
    this.random = options.random ?? Math.random;
  }

  /** The delay before the next retry; each call widens the window for the one after. */
  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
    // Stop growing once the cap is reached, so the exponent never overflows.
    if (ceiling < this.capMs) this.attempt += 1;
    return Math.floor(this.random() * ceiling);
  }

  /** After a success: the next failure starts again from the smallest window. */
  reset(): void {
    this.attempt = 0;
  }
}
