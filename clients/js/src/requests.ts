import { HeraldError } from "./errors.js";
import { REPLY_TYPE, type ErrorFrame, type ReplyFrame, type ReplyTo } from "./protocol.js";

interface Waiting {
  readonly expects: keyof ReplyTo;
  readonly resolve: (reply: ReplyFrame) => void;
  readonly reject: (error: HeraldError) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/**
 * Requests waiting for their replies, by request id. Every request has a deadline: a reply
 * that never comes (a lost connection, a server that stalls) fails it with `timeout` rather
 * than leaving the caller waiting for ever.
 */
export class PendingRequests {
  private readonly waiting = new Map<string, Waiting>();
  private counter = 0;

  /** A fresh request id, unique for the life of the client. */
  nextId(): string {
    this.counter += 1;
    return `r${this.counter}`;
  }

  /** Waits for the reply to request `id`, which must be a `ReplyTo[K]`. */
  expect<K extends keyof ReplyTo>(id: string, expects: K, timeoutMs: number): Promise<ReplyTo[K]> {
    return new Promise<ReplyTo[K]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new HeraldError("timeout", `no reply to ${expects} ${id} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, {
        expects,
        resolve: resolve as (reply: ReplyFrame) => void,
        reject,
        timer,
      });
    });
  }

  /** Hands a reply or an error with an id to its request; false if none waits for it. */
  settle(frame: ReplyFrame | ErrorFrame): boolean {
    if (frame.id === undefined) return false;
    const id = String(frame.id);
    const waiting = this.waiting.get(id);
    if (waiting === undefined) return false;
    this.waiting.delete(id);
    clearTimeout(waiting.timer);
    if (frame.type === "error") {
      waiting.reject(new HeraldError(frame.code, frame.message));
    } else if (frame.type === REPLY_TYPE[waiting.expects]) {
      waiting.resolve(frame);
    } else {
      waiting.reject(new HeraldError("internal", `a ${frame.type} frame answered ${waiting.expects} ${id}`));
    }
    return true;
  }

  /** Fails one waiting request (it could not be sent). */
  fail(id: string, error: HeraldError): void {
    const waiting = this.waiting.get(id);
    if (waiting === undefined) return;
    this.waiting.delete(id);
    clearTimeout(waiting.timer);
    waiting.reject(error);
  }

  /** Fails every waiting request: their replies can no longer come. */
  failAll(error: HeraldError): void {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    for (const waiting of all) {
      clearTimeout(waiting.timer);
      waiting.reject(error);
    }
  }
}
