/**
 * Sends that are never lost nor doubled. Each send gets a `cmid` once, when the app calls
 * `send`, and keeps it for every retry: Herald stores one message per (sender, cmid), so a
 * retry of a send that was in fact stored answers `dup:true` with the original msgid.
 *
 * A send is retried, with the same cmid, when the server answers `unavailable` or
 * `rate_limited`, when its reply does not come in time, and when the connection drops
 * before the reply — on the next session, in the order the app sent them. It fails only for
 * the server's refusals of the message itself (forbidden, not_found, too_large…) or when the
 * client is closed.
 */

import { Backoff } from "./backoff.js";
import { HeraldError } from "./errors.js";
import type { Gid, Json, Millis, Msgid, SendFrame, SentFrame } from "./protocol.js";

/** A stored message, as its `sent` reply tells. */
export interface Sent {
  gid: Gid;
  msgid: Msgid;
  ts: Millis;
  cmid: string;
  /** True when an earlier attempt (or an earlier send with this cmid) had stored it. */
  dup: boolean;
}

export interface SendsOptions {
  /** Whether a session is up to send on. */
  isUp(): boolean;
  /** One attempt: fails at once with `disconnected` when no session is up. */
  request(fields: Omit<SendFrame, "id" | "type">): Promise<SentFrame>;
  maxBodyBytes: number;
}

interface Outgoing {
  readonly gid: Gid;
  readonly cmid: string;
  readonly body: Json;
  readonly retries: Backoff;
  readonly resolve: (sent: Sent) => void;
  readonly reject: (error: HeraldError) => void;
  inFlight: boolean;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
}

export class Sends {
  /** Sends not yet confirmed, in the order the app made them (a Set keeps insertion order). */
  private readonly outgoing = new Set<Outgoing>();
  private closed: HeraldError | undefined;

  constructor(private readonly options: SendsOptions) {}

  send(gid: Gid, body: Json, cmid: string = newCmid()): Promise<Sent> {
    if (this.closed !== undefined) return Promise.reject(this.closed);
    const size = new TextEncoder().encode(JSON.stringify(body)).length;
    if (size > this.options.maxBodyBytes) {
      return Promise.reject(new HeraldError("too_large", `body of ${size} bytes, over ${this.options.maxBodyBytes}`));
    }
    return new Promise<Sent>((resolve, reject) => {
      const entry: Outgoing = {
        gid,
        cmid,
        body,
        retries: new Backoff({ baseMs: 200, capMs: 5_000 }),
        resolve,
        reject,
        inFlight: false,
        retryTimer: undefined,
      };
      this.outgoing.add(entry);
      this.attempt(entry);
    });
  }

  /** How many sends wait for their confirmation. */
  get waiting(): number {
    return this.outgoing.size;
  }

  /** A session opened: every send not on its way goes again, in order. */
  up(): void {
    for (const entry of this.outgoing) {
      if (!entry.inFlight && entry.retryTimer === undefined) this.attempt(entry);
    }
  }

  /** The client is closed: what is not confirmed fails with `error`. */
  close(error: HeraldError): void {
    this.closed = error;
    for (const entry of this.outgoing) {
      if (entry.retryTimer !== undefined) clearTimeout(entry.retryTimer);
      entry.reject(error);
    }
    this.outgoing.clear();
  }

  private attempt(entry: Outgoing): void {
    entry.retryTimer = undefined;
    // With no session up, the send waits for `up`.
    if (this.closed !== undefined || !this.options.isUp()) return;
    entry.inFlight = true;
    this.options.request({ gid: entry.gid, cmid: entry.cmid, body: entry.body }).then(
      (sent) => {
        entry.inFlight = false;
        if (!this.outgoing.delete(entry)) return;
        entry.resolve({ gid: sent.gid, msgid: sent.msgid, ts: sent.ts, cmid: entry.cmid, dup: sent.dup });
      },
      (error: unknown) => {
        entry.inFlight = false;
        if (!this.outgoing.has(entry)) return;
        const failure = error instanceof HeraldError ? error : new HeraldError("internal", String(error));
        if (!failure.retryable) {
          this.outgoing.delete(entry);
          entry.reject(failure);
        } else if (failure.code !== "disconnected") {
          // The session is still up but the server could not take it now: wait a little.
          entry.retryTimer = setTimeout(() => this.attempt(entry), entry.retries.next());
        }
        // Disconnected: `up` sends it again on the next session.
      },
    );
  }
}

/** A client message id: a random UUID, 36 characters (the protocol allows 1–64). */
export function newCmid(): string {
  const cryptoApi = globalThis.crypto;
  if (typeof cryptoApi.randomUUID === "function") return cryptoApi.randomUUID();
  // Browsers outside secure contexts have getRandomValues but not randomUUID.
  const bytes = cryptoApi.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
