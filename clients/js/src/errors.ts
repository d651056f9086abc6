import type { ErrorCode } from "./protocol.js";

/**
 * Why a request failed: a server error code, or one of the library's own:
 * - `timeout`: no reply within the request timeout;
 * - `disconnected`: the connection went down before the reply came;
 * - `closed`: the client was closed (by the app, or for good by the server).
 */
export type FailureCode = ErrorCode | "timeout" | "disconnected" | "closed";

export class HeraldError extends Error {
  override readonly name = "HeraldError";

  constructor(
    readonly code: FailureCode,
    message: string,
  ) {
    super(message);
  }

  /**
   * Whether the same request may succeed later unchanged. Server-side refusals of the
   * request itself (forbidden, not_found, too_large, bad_request…) may not.
   */
  get retryable(): boolean {
    return (
      this.code === "unavailable" ||
      this.code === "rate_limited" ||
      this.code === "timeout" ||
      this.code === "disconnected"
    );
  }
}
