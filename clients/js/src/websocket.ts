/**
 * The part of the WebSocket API the library uses. Browsers' `WebSocket` and the `ws`
 * package's both fit it, so either can be passed as `WebSocket` in the client's options
 * (Node 20 has no global WebSocket; Node ≥ 22 and browsers do).
 */

export interface SocketEvent {
  readonly type: string;
  /** `message` events: the frame; a string for text frames. */
  readonly data?: unknown;
  /** `close` events. */
  readonly code?: number;
  readonly reason?: string;
}

export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: SocketEvent) => void): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** `readyState` of an open socket, the same in every implementation. */
export const OPEN = 1;

/** The global WebSocket of browsers and Node ≥ 22, if there is one. */
export function globalWebSocket(): WebSocketConstructor | undefined {
  return (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
}
