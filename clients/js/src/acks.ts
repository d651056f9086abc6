/**
 * Acks, cumulative and debounced. Acking msgid N tells Herald the member has everything up
 * to N, so only the highest msgid of each group matters: marks made within the delay are
 * sent as one `ack` per group. The server never moves a watermark backwards, so an ack sent
 * twice (after a reconnect) is harmless.
 */

import type { AckFrame, Gid, GroupPosition, Msgid } from "./protocol.js";

export interface AcksOptions {
  /** Sends a frame; false when no session is up (the ack waits for the next one). */
  send(frame: AckFrame): boolean;
  delayMs: number;
}

export class Acks {
  /** The highest msgid the app has, per group. */
  private readonly wanted = new Map<Gid, Msgid>();
  /** The highest msgid the server is known to hold as acked, per group. */
  private readonly acked = new Map<Gid, Msgid>();
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly options: AcksOptions) {}

  /** The app has everything of `gid` up to `msgid`. */
  mark(gid: Gid, msgid: Msgid): void {
    if (msgid <= (this.wanted.get(gid) ?? 0)) return;
    this.wanted.set(gid, msgid);
    this.timer ??= setTimeout(() => this.flush(), this.options.delayMs);
  }

  /** A session opened: its `hello` says which watermarks the server holds. */
  hello(groups: readonly GroupPosition[]): void {
    this.acked.clear();
    for (const group of groups) this.acked.set(group.gid, group.last_ack);
    this.flush();
  }

  /** Sends what is not acked yet, now. */
  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    for (const [gid, msgid] of this.wanted) {
      if (msgid <= (this.acked.get(gid) ?? 0)) continue;
      if (!this.options.send({ type: "ack", gid, msgid })) return;
      this.acked.set(gid, msgid);
    }
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
