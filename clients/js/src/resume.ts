/**
 * Each group's stream of messages, delivered to the app once and in msgid order, across
 * reconnects and server restarts.
 *
 * Delivery from Herald is at-least-once and a session only receives what is pushed while it
 * is up. So each group keeps a cursor — the highest msgid delivered to the app — and:
 * - a message at or below the cursor is a duplicate, and dropped;
 * - the message just above it is delivered, and so are any buffered ones that follow;
 * - a message further ahead means some are missing (pushed while the client was away):
 *   it waits in a buffer while the gap is pulled, page by page, until `more` is false.
 * After every `hello`, each group whose `latest` is past its cursor is pulled the same way.
 *
 * msgids are dense and committed in order (having seen N, everything below N is stored), so
 * a pull after the cursor always fills the gap.
 */

import type { Gid, GroupPosition, Message, Msgid } from "./protocol.js";

export interface Page {
  msgs: Message[];
  more: boolean;
  /**
   * Present when the server's retention pruned messages after the `after` asked for: the
   * group's first retained msgid, where the page starts. History before it is gone.
   */
  first?: Msgid;
}

export interface ResumeOptions {
  /** Hands a message to the app. */
  deliver(message: Message): void;
  /** Asks for the messages of `gid` after `after` (a `pull`). */
  pull(gid: Gid, after: Msgid): Promise<Page>;
  /** A pull failed; the next `hello` tries again. */
  failed(gid: Gid, error: unknown): void;
}

interface Stream {
  /** The highest msgid delivered to the app. */
  cursor: Msgid;
  /** Messages that arrived ahead of a gap, by msgid. */
  ahead: Map<Msgid, Message>;
  /** Whether a pull is filling this group's gap now. */
  pulling: boolean;
}

export class Resume {
  private readonly streams = new Map<Gid, Stream>();

  constructor(
    private readonly options: ResumeOptions,
    initial: Readonly<Record<Gid, Msgid>> = {},
  ) {
    for (const [gid, cursor] of Object.entries(initial)) {
      this.streams.set(Number(gid), { cursor, ahead: new Map(), pulling: false });
    }
  }

  /** Each group's cursor: what an app persists to resume where it stopped after a restart. */
  cursors(): Record<Gid, Msgid> {
    const cursors: Record<Gid, Msgid> = {};
    for (const [gid, stream] of this.streams) cursors[gid] = stream.cursor;
    return cursors;
  }

  cursor(gid: Gid): Msgid | undefined {
    return this.streams.get(gid)?.cursor;
  }

  /**
   * A session opened. A group seen for the first time starts at the member's watermark
   * (`last_ack`): what is above it is unread and will be delivered. Every group behind its
   * `latest` is then pulled.
   */
  hello(groups: readonly GroupPosition[]): void {
    for (const group of groups) {
      const stream = this.stream(group.gid, group.last_ack);
      if (group.latest > stream.cursor) void this.catchUp(group.gid, stream);
    }
  }

  /** A pushed message. */
  receive(message: Message): void {
    // A group the client was not in at `hello` (it just joined): its stream starts here.
    const stream = this.stream(message.gid, message.msgid - 1);
    if (message.msgid <= stream.cursor) return;
    stream.ahead.set(message.msgid, message);
    this.flush(message.gid, stream);
  }

  private stream(gid: Gid, start: Msgid): Stream {
    let stream = this.streams.get(gid);
    if (stream === undefined) {
      stream = { cursor: start, ahead: new Map(), pulling: false };
      this.streams.set(gid, stream);
    }
    return stream;
  }

  /** Delivers the buffered messages that follow the cursor; pulls if a gap remains. */
  private flush(gid: Gid, stream: Stream): void {
    for (;;) {
      const next = stream.ahead.get(stream.cursor + 1);
      if (next === undefined) break;
      stream.ahead.delete(next.msgid);
      this.advance(stream, next);
    }
    for (const msgid of stream.ahead.keys()) {
      if (msgid <= stream.cursor) stream.ahead.delete(msgid);
    }
    if (stream.ahead.size > 0) void this.catchUp(gid, stream);
  }

  private advance(stream: Stream, message: Message): void {
    stream.cursor = message.msgid;
    this.options.deliver(message);
  }

  /** Pulls pages after the cursor until the server has no more; one pull per group at a time. */
  private async catchUp(gid: Gid, stream: Stream): Promise<void> {
    if (stream.pulling) return;
    stream.pulling = true;
    try {
      for (;;) {
        const before = stream.cursor;
        const page = await this.options.pull(gid, before);
        // Retention pruned what the cursor would have gone through: it goes on from there.
        if (page.first !== undefined && page.first > stream.cursor + 1) stream.cursor = page.first - 1;
        for (const message of page.msgs) {
          if (message.msgid === stream.cursor + 1) this.advance(stream, message);
        }
        // A page that moved nothing cannot be followed by one that would.
        if (!page.more || stream.cursor === before) break;
      }
    } catch (error) {
      this.options.failed(gid, error);
      return;
    } finally {
      stream.pulling = false;
    }
    this.flush(gid, stream);
  }
}
