/**
 * @herald/client — a TypeScript client for Herald. See README.md for an example and the
 * reference.
 */

export { HeraldClient } from "./client.js";
export type {
  HeraldClientOptions,
  HeraldEvents,
  SyncNotify,
  FriendRequest,
  Presence,
  Reads,
  Signal,
} from "./client.js";
export type { ConnectionState } from "./connection.js";
export { closePolicy } from "./close-codes.js";
export type { CloseAction, ClosePolicy } from "./close-codes.js";
export { Backoff } from "./backoff.js";
export type { Listener } from "./emitter.js";
export type { BackoffOptions } from "./backoff.js";
export { HeraldError } from "./errors.js";
export type { FailureCode } from "./errors.js";
export type { Sent } from "./sends.js";
export type { Page } from "./resume.js";
export type { GroupCopy } from "./sync-store.js";
export type { TokenCallback } from "./tokens.js";
export type { WebSocketConstructor, WebSocketLike, SocketEvent } from "./websocket.js";
export type * from "./protocol.js";
