/**
 * One WebSocket at a time to Herald, opened again and again until the close-code table says
 * stop or the app closes the client. A session counts as up from its `hello` on: that is
 * the first frame, and nothing sent before it is handled.
 */

import type { Backoff } from "./backoff.js";
import { closePolicy } from "./close-codes.js";
import { parseServerFrame, type ClientFrame, type HelloFrame, type ServerFrame, type Uid } from "./protocol.js";
import type { TokenSource } from "./tokens.js";
import { OPEN, type WebSocketConstructor, type WebSocketLike } from "./websocket.js";

export type ConnectionState =
  /** An attempt to open a session is under way (`attempt` counts from 1 since the last up). */
  | { status: "connecting"; attempt: number }
  /** A session is up: `hello` came. */
  | { status: "open"; uid: Uid; session: string }
  /**
   * The last session or attempt ended with close `code` (1006: lost, or never made); the
   * next attempt starts after `delayMs`. `meaning` is the close-code table's, `reason` the
   * text the server (or the library) gave, if any.
   */
  | { status: "waiting"; delayMs: number; code: number; meaning: string; reason: string }
  /** For good: the app closed the client, or the server's close code says not to retry. */
  | { status: "stopped"; code: number; meaning: string; reason: string };

/** What the connection tells its owner. */
export interface ConnectionHandlers {
  up(hello: HelloFrame): void;
  frame(frame: ServerFrame): void;
  /** The session that was up is gone (every reply it owed is lost with it). */
  down(): void;
  state(state: ConnectionState): void;
}

export interface ConnectionOptions {
  /** Herald's base URL: `https://chat.example.com`, `ws://127.0.0.1:8080`… */
  url: string;
  tokens: TokenSource;
  WebSocket: WebSocketConstructor;
  backoff: Backoff;
  /** Milliseconds an attempt may take to get its `hello` (a socket can open and then stall). */
  openTimeoutMs: number;
  handlers: ConnectionHandlers;
}

/** How a session or an attempt ended. */
interface Outcome {
  code: number;
  reason: string;
  /** Whether it got as far as `hello`. */
  greeted: boolean;
}

/** The close code reported for a connection lost without a close frame (RFC 6455). */
const ABNORMAL = 1006;

export class Connection {
  private socket: WebSocketLike | undefined;
  private endSession: ((code: number, reason: string) => void) | undefined;
  private wakeUp: (() => void) | undefined;
  private running = false;
  private stopped = false;

  constructor(private readonly options: ConnectionOptions) {}

  /** Whether a session is up, so frames can be sent. */
  get isUp(): boolean {
    return this.socket !== undefined && this.socket.readyState === OPEN;
  }

  start(): void {
    if (this.running || this.stopped) return;
    this.running = true;
    void this.run();
  }

  /** Ends the session and stops for good. */
  stop(): void {
    this.stopped = true;
    this.wakeUp?.();
    this.endSession?.(1000, "closed by the client");
  }

  /**
   * Abandons the current session at once and opens another: for a connection that has
   * gone silent, whose close event might take long to come.
   */
  drop(reason: string): void {
    this.endSession?.(ABNORMAL, reason);
  }

  /** Sends a frame on the session that is up; false (nothing sent) when none is. */
  send(frame: ClientFrame): boolean {
    const socket = this.socket;
    if (socket === undefined || socket.readyState !== OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  private async run(): Promise<void> {
    const { tokens, backoff, handlers } = this.options;
    let attempt = 0;
    let last: Outcome = { code: 1000, reason: "closed by the client", greeted: false };
    while (!this.stopped) {
      attempt += 1;
      handlers.state({ status: "connecting", attempt });
      try {
        const token = await tokens.get();
        if (this.stopped) break;
        last = await this.session(token);
      } catch (error) {
        last = { code: ABNORMAL, reason: `getToken failed: ${String(error)}`, greeted: false };
      }
      if (this.stopped) break;
      if (last.greeted) {
        attempt = 0;
      } else {
        tokens.failed();
      }
      const policy = closePolicy(last.code);
      if (policy.action === "stop" || (policy.action === "renew-token" && !tokens.renewable)) {
        this.stopped = true;
        handlers.state({ status: "stopped", code: last.code, meaning: policy.meaning, reason: last.reason });
        return;
      }
      if (policy.action === "renew-token") tokens.expire();
      const delayMs = backoff.next();
      handlers.state({ status: "waiting", delayMs, code: last.code, meaning: policy.meaning, reason: last.reason });
      await this.sleep(delayMs);
    }
    handlers.state({ status: "stopped", code: 1000, meaning: "closed by the client", reason: "" });
  }

  /** Opens one socket and resolves when it is over, however it ends. */
  private session(token: string): Promise<Outcome> {
    const { handlers, backoff, tokens } = this.options;
    return new Promise<Outcome>((resolve) => {
      let greeted = false;
      let finished = false;
      let helloTimer: ReturnType<typeof setTimeout> | undefined;
      const finish = (code: number, reason: string): void => {
        if (finished) return;
        finished = true;
        clearTimeout(helloTimer);
        this.socket = undefined;
        this.endSession = undefined;
        if (greeted) handlers.down();
        resolve({ code, reason, greeted });
      };

      let socket: WebSocketLike;
      try {
        socket = new this.options.WebSocket(sessionUrl(this.options.url, token));
      } catch (error) {
        finish(ABNORMAL, String(error));
        return;
      }
      this.endSession = (code, reason) => {
        try {
          socket.close(1000);
        } catch {
          // Closing a socket that is still connecting may throw in some implementations;
          // it is being abandoned either way.
        }
        finish(code, reason);
      };
      helloTimer = setTimeout(() => this.endSession?.(ABNORMAL, "no hello"), this.options.openTimeoutMs);
      socket.addEventListener("message", (event) => {
        if (finished || typeof event.data !== "string") return;
        const frame = parseServerFrame(event.data);
        if (frame === undefined) return;
        if (!greeted) {
          if (frame.type !== "hello") return;
          greeted = true;
          clearTimeout(helloTimer);
          this.socket = socket;
          backoff.reset();
          tokens.succeeded();
          handlers.state({ status: "open", uid: frame.uid, session: frame.session });
          handlers.up(frame);
          return;
        }
        handlers.frame(frame);
      });
      socket.addEventListener("close", (event) => finish(event.code ?? ABNORMAL, event.reason ?? ""));
      // An error is always followed by a close event, which carries what matters.
      socket.addEventListener("error", () => undefined);
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = done;
    });
  }
}

/** `GET /v1/ws?token=…` on the server's base URL; browsers cannot set headers on sockets. */
export function sessionUrl(base: string, token: string): string {
  const url = new URL(base);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  if (!url.pathname.endsWith("/v1/ws")) url.pathname = `${url.pathname.replace(/\/$/, "")}/v1/ws`;
  url.searchParams.set("token", token);
  return url.toString();
}
