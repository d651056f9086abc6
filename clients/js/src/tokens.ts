/**
 * Where the connection's token comes from: a fixed string, or a callback the app implements
 * (typically a call to its backend, which mints tokens with Herald's admin API).
 *
 * A token from the callback is kept and reused until it is known or suspected to be
 * stale; then the next connection attempt asks for a fresh one.
 */

export type TokenCallback = () => string | Promise<string>;

/** Seconds before `exp` at which a token counts as expired: clocks differ a little. */
const EXPIRY_MARGIN_S = 5;
/** Failed attempts (no `hello`) after which the kept token is suspected and renewed. */
const SUSPECT_AFTER_FAILURES = 3;

export class TokenSource {
  private kept: string | undefined;
  private failures = 0;

  constructor(
    private readonly fixed: string | undefined,
    private readonly callback: TokenCallback | undefined,
  ) {
    if (fixed === undefined && callback === undefined) {
      throw new TypeError("HeraldClient needs a token or a getToken callback");
    }
    // A token given alongside the callback is used first.
    this.kept = fixed;
  }

  /** Whether a stale token can be replaced (otherwise an expired token ends the client). */
  get renewable(): boolean {
    return this.callback !== undefined;
  }

  async get(): Promise<string> {
    if (this.callback === undefined) return this.fixed ?? "";
    if (this.kept === undefined || isExpired(this.kept)) {
      this.kept = await this.callback();
    }
    return this.kept;
  }

  /** The server said the token expired (4001): never use it again. */
  expire(): void {
    this.kept = undefined;
  }

  /**
   * An attempt ended before `hello`. A refused upgrade (401) cannot be told apart from a
   * server that is down — browsers hide the HTTP status — so the token is only suspected
   * after a few failures in a row, not asked anew at every retry while a server restarts.
   */
  failed(): void {
    this.failures += 1;
    if (this.failures >= SUSPECT_AFTER_FAILURES) {
      this.kept = undefined;
      this.failures = 0;
    }
  }

  /** A session opened: the token works. */
  succeeded(): void {
    this.failures = 0;
  }
}

/** Whether a JWT's `exp` claim has passed (or is about to); false if it cannot be read. */
export function isExpired(token: string, nowMs: number = Date.now()): boolean {
  const exp = expiry(token);
  return exp !== undefined && exp - EXPIRY_MARGIN_S <= nowMs / 1000;
}

function expiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const claims: unknown = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")));
    const exp = (claims as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}
