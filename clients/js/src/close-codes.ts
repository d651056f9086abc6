/**
 * What to do when the server closes the WebSocket: docs/protocol.md's close-code table,
 * encoded here and nowhere else. The connection asks `closePolicy(code)` and follows it.
 */

/**
 * - `reconnect`: a passing condition; connect again after a backoff delay.
 * - `renew-token`: the token expired; get a fresh one, then connect again.
 * - `stop`: reconnecting would fail the same way (or must not happen); give up for good.
 */
export type CloseAction = "reconnect" | "renew-token" | "stop";

export interface ClosePolicy {
  readonly action: CloseAction;
  /** What the code means, for logs and for the `state` event. */
  readonly meaning: string;
}

const TABLE: Readonly<Record<number, ClosePolicy>> = {
  // The client broke the protocol: the same client would break it again.
  1002: { action: "stop", meaning: "WebSocket protocol violation" },
  1007: { action: "stop", meaning: "text frame that is not UTF-8" },
  1008: { action: "stop", meaning: "too many bad or rate-limited requests in a row" },
  // The frame that was too big is not resent (this library refuses oversized frames before
  // sending them), so the session itself may resume.
  1009: { action: "reconnect", meaning: "frame too big" },
  1011: { action: "reconnect", meaning: "storage unavailable while opening the session" },
  1012: { action: "reconnect", meaning: "server restarting" },
  1013: { action: "reconnect", meaning: "node full" },
  4001: { action: "renew-token", meaning: "token expired" },
  4003: { action: "stop", meaning: "account deactivated" },
  4008: { action: "reconnect", meaning: "client too slow to read" },
  // The user must close one of their sessions first: retrying would only be refused again.
  4029: { action: "stop", meaning: "too many sessions for this user" },
};

/**
 * Codes outside the table — 1000/1001 from the server, and 1006 when the connection was
 * lost or never made (refused, reset, server killed) — are passing conditions too.
 */
const UNLISTED: ClosePolicy = { action: "reconnect", meaning: "connection closed" };

export function closePolicy(code: number): ClosePolicy {
  return TABLE[code] ?? UNLISTED;
}
