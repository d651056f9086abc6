/**
 * Acks and read positions, cumulative and debounced. Acking msgid N tells Herald the member
 * has received everything up to N; reading N, that they have read it (the two are kept
 * apart). Only the highest msgid of each group matters: marks made within the delay are sent
 * as one frame per group. The server never moves either backwards, so one sent twice (after a
 * reconnect) is harmless.
 */

import type { AckFrame, Gid, GroupPosition, Msgid, ReadFrame } from "./protocol.js";

export interface AcksOptions {
  /** Which position: `ack` (received) or `read`. */
  kind: "ack" | "read";
  /** Sends a frame; false when no session is up (the mark waits for the next one). */
  send(frame: AckFrame | ReadFrame): boolean;
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
    for (const group of groups) {
      this.acked.set(group.gid, this.options.kind === "ack" ? group.last_ack : group.last_read);
    }
    this.flush();
  }

  /** Sends what is not acked yet, now. */
  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    for (const [gid, msgid] of this.wanted) {
      if (msgid <= (this.acked.get(gid) ?? 0)) continue;
      if (!this.options.send({ type: this.options.kind, gid, msgid })) return;
      this.acked.set(gid, msgid);
    }
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
