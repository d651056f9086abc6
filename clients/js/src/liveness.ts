/**
 * Finding a dead connection. Herald pings every `heartbeat_s` seconds, but browsers hide
 * WebSocket pings from pages, and a connection whose peer vanished (a laptop that slept, a
 * NAT that forgot it) may stay "open" for minutes. So after each interval in which nothing
 * arrived, the client sends a `ping` of its own; no `pong` in time, and the session is given up.
 */

export interface LivenessOptions {
  /** Sends a `ping`; resolves on its `pong`, rejects on timeout or a lost session. */
  ping(): Promise<unknown>;
  /** Whether a failed ping means the session is dead (a timeout), not merely gone. */
  isSilence(error: unknown): boolean;
  /** Gives up the session: the connection opens another. */
  dead(): void;
}

export class Liveness {
  private timer: ReturnType<typeof setInterval> | undefined;
  private lastHeardAt = 0;

  constructor(private readonly options: LivenessOptions) {}

  /** A session came up with this heartbeat. */
  start(heartbeatS: number): void {
    this.stop();
    this.heard();
    const intervalMs = Math.max(1, heartbeatS) * 1000;
    this.timer = setInterval(() => {
      if (Date.now() - this.lastHeardAt < intervalMs) return;
      this.options.ping().catch((error: unknown) => {
        if (this.options.isSilence(error)) this.options.dead();
      });
    }, intervalMs);
  }

  /** A frame arrived. */
  heard(): void {
    this.lastHeardAt = Date.now();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }
}
