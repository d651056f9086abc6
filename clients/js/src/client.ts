/**
 * HeraldClient: the one object an app holds. It wires the parts together — the connection
 * that keeps a session up, the streams that deliver each message once and in order, the
 * sends that are never lost nor doubled, the acks, the sync copies and presence — and turns
 * every server frame into a typed event.
 */

import { Acks } from "./acks.js";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { Connection, type ConnectionState } from "./connection.js";
import { Emitter, type Listener } from "./emitter.js";
import { HeraldError } from "./errors.js";
import { Liveness } from "./liveness.js";
import { PresenceBook, type PresenceChange } from "./presence.js";
import type {
  FriendRequestFrame,
  Gid,
  GroupEvent,
  GroupInfo,
  HelloFrame,
  Json,
  Message,
  Msgid,
  ReadsFrame,
  ReplyTo,
  RequestFrame,
  ServerFrame,
  SignalPushFrame,
  SyncNotifyFrame,
  Uid,
  UserInfo,
} from "./protocol.js";
import { PendingRequests } from "./requests.js";
import { Resume, type Page } from "./resume.js";
import { Sends, type Sent } from "./sends.js";
import { SyncStore, type GroupCopy } from "./sync-store.js";
import { TokenSource, type TokenCallback } from "./tokens.js";
import { globalWebSocket, type WebSocketConstructor } from "./websocket.js";

export interface HeraldClientOptions {
  /** Herald's base URL, e.g. `https://chat.example.com` or `ws://127.0.0.1:8080`. */
  url: string;
  /** A token to connect with. With `getToken` too, it is used first. */
  token?: string;
  /** Gets a fresh token: called before the first connection (unless `token` is given), after a 4001, and when the token's `exp` has passed. */
  getToken?: TokenCallback;
  /** The WebSocket constructor; defaults to the global one (browsers, Node ≥ 22). In Node 20 pass `ws`'s. */
  WebSocket?: WebSocketConstructor;
  /** Milliseconds each request waits for its reply (default 10,000). */
  requestTimeoutMs?: number;
  /** Milliseconds acks are gathered before they are sent (default 200). */
  ackDelayMs?: number;
  /** Ack each message once the `message` listeners have run (default true). Otherwise call `ack`. */
  autoAck?: boolean;
  /** Keep the sync copies (profile, group list, members, friends) up to date (default true). */
  sync?: boolean;
  /** Per group, the highest msgid the app already has (from `cursors()` of an earlier run). */
  cursors?: Record<Gid, Msgid>;
  /** Reconnection delays (default: full jitter from 500 ms, capped at 30 s). */
  backoff?: BackoffOptions;
  /** Messages per `pull` page while catching up (default 100; 1–1000). */
  pullLimit?: number;
  /** Largest message body in bytes of JSON (default 16,384, the server's default). */
  maxBodyBytes?: number;
}

/** A request's fields besides `type` and `id`, which the client sets. */
type RequestFields<K extends keyof ReplyTo> = Omit<Extract<RequestFrame, { type: K }>, "type" | "id">;

export type SyncNotify = Omit<SyncNotifyFrame, "type">;
export type FriendRequest = Omit<FriendRequestFrame, "type">;
export type Presence = PresenceChange;
export type Reads = Omit<ReadsFrame, "type">;
export type Signal = Omit<SignalPushFrame, "type">;

/** Every event the client emits, with its payload. */
export interface HeraldEvents {
  /** The connection's state changed. */
  state: ConnectionState;
  /** A session opened; after it, missed messages are pulled. */
  hello: HelloFrame;
  /** A message, once, in msgid order within its group. */
  message: Message;
  /** A group event as pushed (the member lists apply it themselves). */
  event: GroupEvent;
  /** The server's notice that synced state changed (the client syncs on its own). */
  syncNotify: SyncNotify;
  /** Another user asked to be friends. */
  friendRequest: FriendRequest;
  /** A member of a watched group (see `online`) came online or went. */
  presence: Presence;
  /** Read positions of a group's members moved (the user's own, from other devices, too). */
  reads: Reads;
  /** A member signalled (typing) in a group. */
  signal: Signal;
  /** The user's own profile changed. */
  profile: UserInfo;
  /** The group list changed. */
  groupList: ReadonlyMap<Gid, GroupInfo>;
  /** A group's member list changed; `group` is undefined once the user is no longer in it. */
  members: { gid: Gid; group: GroupCopy | undefined };
  /** The friend list (or a friend's profile) changed. */
  friends: ReadonlySet<Uid>;
  /** A failure no request is waiting for: a refused ack, a failed background pull or sync. */
  error: HeraldError;
}

export class HeraldClient {
  private readonly events = new Emitter<HeraldEvents>();
  private readonly requests = new PendingRequests();
  private readonly connection: Connection;
  private readonly resume: Resume;
  private readonly sends: Sends;
  private readonly acks: Acks;
  private readonly reads: Acks;
  private readonly store = new SyncStore();
  private readonly presenceBook = new PresenceBook();
  private readonly requestTimeoutMs: number;
  private readonly autoAck: boolean;
  private readonly syncEnabled: boolean;
  private readonly pullLimit: number;
  private readonly liveness: Liveness;
  /** The sync running now, if one is. */
  private syncRun: Promise<void> | undefined;
  /** Whether it must run once more: something newer was announced while it ran. */
  private syncAgain = false;
  private closedError: HeraldError | undefined;
  private uidValue: Uid | undefined;
  /** Waiting for the next session to come up. */
  private readonly upWaiters = new Set<() => void>();

  constructor(options: HeraldClientOptions) {
    const WebSocket = options.WebSocket ?? globalWebSocket();
    if (WebSocket === undefined) {
      throw new TypeError("no global WebSocket: pass one as options.WebSocket (in Node 20, `ws`)");
    }
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.autoAck = options.autoAck ?? true;
    this.syncEnabled = options.sync ?? true;
    this.pullLimit = options.pullLimit ?? 100;
    this.connection = new Connection({
      url: options.url,
      tokens: new TokenSource(options.token, options.getToken),
      WebSocket,
      backoff: new Backoff(options.backoff),
      openTimeoutMs: this.requestTimeoutMs,
      handlers: {
        up: (hello) => this.up(hello),
        frame: (frame) => this.frame(frame),
        down: () => this.down(),
        state: (state) => this.changeState(state),
      },
    });
    this.resume = new Resume(
      {
        deliver: (message) => this.deliver(message),
        pull: (gid, after) => this.pullPage(gid, after),
        failed: (_gid, error) => this.background(error),
      },
      options.cursors,
    );
    this.sends = new Sends({
      isUp: () => this.connection.isUp,
      request: (fields) => this.requestNow("send", fields),
      maxBodyBytes: options.maxBodyBytes ?? 16_384,
    });
    this.liveness = new Liveness({
      ping: () => this.requestNow("ping", {}),
      isSilence: (error) => error instanceof HeraldError && error.code === "timeout",
      dead: () => this.connection.drop("no pong"),
    });
    this.acks = new Acks({
      kind: "ack",
      send: (frame) => this.connection.send(frame),
      delayMs: options.ackDelayMs ?? 200,
    });
    this.reads = new Acks({
      kind: "read",
      send: (frame) => this.connection.send(frame),
      delayMs: options.ackDelayMs ?? 200,
    });
  }

  // -------------------------------------------------------------------------------------
  // Life cycle

  /** Starts connecting; resolves once the first session is up. */
  connect(): Promise<void> {
    this.connection.start();
    return this.whenUp(Number.POSITIVE_INFINITY);
  }

  /** Closes the session and stops for good; acks gathered so far are sent first. */
  close(): void {
    if (this.closedError !== undefined) return;
    for (const marks of [this.acks, this.reads]) {
      marks.flush();
      marks.stop();
    }
    this.closedError = new HeraldError("closed", "the client was closed");
    this.connection.stop();
    this.sends.close(this.closedError);
    this.requests.failAll(this.closedError);
    this.wakeUpWaiters();
  }

  /** The signed-in user, once a session opened. */
  get uid(): Uid | undefined {
    return this.uidValue;
  }

  /** Whether a session is up now. */
  get isOpen(): boolean {
    return this.connection.isUp;
  }

  on<K extends keyof HeraldEvents>(name: K, listener: Listener<HeraldEvents[K]>): () => void {
    return this.events.on(name, listener);
  }

  off<K extends keyof HeraldEvents>(name: K, listener: Listener<HeraldEvents[K]>): void {
    this.events.off(name, listener);
  }

  // -------------------------------------------------------------------------------------
  // Messages

  /**
   * Sends a message; resolves with it as stored. Retried with the same cmid until the
   * server confirms it (see sends.ts); rejects only for refusals of the message itself or
   * when the client is closed. Pass `cmid` to choose it (1–64 characters).
   */
  send(gid: Gid, body: Json, options: { cmid?: string } = {}): Promise<Sent> {
    return this.sends.send(gid, body, options.cmid);
  }

  /** Acks everything of `gid` up to `msgid` (cumulative, debounced). Needed only with `autoAck: false`. */
  ack(gid: Gid, msgid: Msgid): void {
    this.acks.mark(gid, msgid);
  }

  /**
   * The user has read everything of `gid` up to `msgid`: a read receipt (cumulative,
   * debounced, sent again after a reconnect if it was not sent), apart from the ack.
   */
  markRead(gid: Gid, msgid: Msgid): void {
    this.reads.mark(gid, msgid);
  }

  /**
   * Tells the group's other online sessions the user signals `kind` (default `typing`).
   * Ephemeral: dropped when no session is up; send it again every few seconds while it holds.
   */
  signal(gid: Gid, kind = "typing"): void {
    this.connection.send({ type: "signal", gid, kind });
  }

  /** Per group, the highest msgid delivered: keep it to pass as `cursors` next time. */
  cursors(): Record<Gid, Msgid> {
    return this.resume.cursors();
  }

  /**
   * One page of a group's stored messages after `after` (does not go through delivery);
   * `first` says where the server's retention cut, when it pruned some of them.
   */
  async pull(gid: Gid, after: Msgid = 0, limit: number = this.pullLimit): Promise<Page> {
    const reply = await this.request("pull", { gid, after, limit });
    const page: Page = { msgs: reply.msgs, more: reply.more };
    if (reply.first !== undefined) page.first = reply.first;
    return page;
  }

  /**
   * Recalls a message: its body is removed for good and a tombstone keeps its msgid; the
   * group's members get a `message_recalled` event. The sender may within the server's
   * recall window, an owner or admin at any time. Recalling a tombstone again succeeds.
   */
  async recall(gid: Gid, msgid: Msgid): Promise<void> {
    await this.request("recall", { gid, msgid });
  }

  // -------------------------------------------------------------------------------------
  // Presence

  /**
   * Who of `gid` is online now; from then on `presence` events tell each change, across
   * reconnects too.
   */
  async online(gid: Gid): Promise<Uid[]> {
    const reply = await this.request("online", { gid });
    for (const change of this.presenceBook.answer(gid, reply.uids)) this.events.emit("presence", change);
    return reply.uids;
  }

  /** The online members of a watched group, as last known. */
  onlineMembers(gid: Gid): ReadonlySet<Uid> | undefined {
    return this.presenceBook.members(gid);
  }

  // -------------------------------------------------------------------------------------
  // Sync copies

  /** The user's own profile. */
  get profile(): UserInfo | undefined {
    return this.store.profile;
  }

  /** The groups the user is in. */
  get groups(): ReadonlyMap<Gid, GroupInfo> {
    return this.store.groupList;
  }

  /** A group's members with their roles and profiles. */
  members(gid: Gid): GroupCopy | undefined {
    return this.store.group(gid);
  }

  /** The user's friends, and their profiles. */
  get friends(): ReadonlySet<Uid> {
    return this.store.friends;
  }

  get friendProfiles(): ReadonlyMap<Uid, UserInfo> {
    return this.store.friendProfiles;
  }

  /**
   * Brings the copies up to date now (the client also does so on its own, after each
   * `hello` and each `sync_notify` naming something newer). Calls made while a sync runs
   * join it, and it runs once more for them, so it never misses what they asked for.
   */
  sync(): Promise<void> {
    if (this.syncRun !== undefined) {
      this.syncAgain = true;
      return this.syncRun;
    }
    this.syncRun = this.syncUntilCurrent().finally(() => {
      this.syncRun = undefined;
    });
    return this.syncRun;
  }

  private async syncUntilCurrent(): Promise<void> {
    do {
      this.syncAgain = false;
      const reply = await this.request("sync", this.store.versions());
      const changes = this.store.apply(reply);
      if (changes.profile && this.store.profile !== undefined) this.events.emit("profile", this.store.profile);
      if (changes.groupList) this.events.emit("groupList", this.store.groupList);
      for (const gid of new Set(changes.groups)) this.events.emit("members", { gid, group: this.store.group(gid) });
      if (changes.friends) this.events.emit("friends", this.store.friends);
    } while (this.syncAgain);
  }

  // -------------------------------------------------------------------------------------
  // Requests

  /** Sends a request once a session is up and waits for its reply, all within the timeout. */
  private async request<K extends keyof ReplyTo>(type: K, fields: RequestFields<K>): Promise<ReplyTo[K]> {
    const deadline = Date.now() + this.requestTimeoutMs;
    await this.whenUp(this.requestTimeoutMs);
    return this.requestNow(type, fields, Math.max(1, deadline - Date.now()));
  }

  /** Sends a request on the session up now; fails with `disconnected` if none is. */
  private requestNow<K extends keyof ReplyTo>(
    type: K,
    fields: RequestFields<K>,
    timeoutMs: number = this.requestTimeoutMs,
  ): Promise<ReplyTo[K]> {
    if (this.closedError !== undefined) return Promise.reject(this.closedError);
    const id = this.requests.nextId();
    const reply = this.requests.expect(id, type, timeoutMs);
    const frame = { ...fields, type, id } as RequestFrame;
    if (!this.connection.send(frame)) {
      this.requests.fail(id, new HeraldError("disconnected", "no session is up"));
    }
    return reply;
  }

  private whenUp(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer);
        this.upWaiters.delete(settle);
        if (this.closedError !== undefined) reject(this.closedError);
        else resolve();
      };
      if (this.closedError !== undefined) return reject(this.closedError);
      if (this.connection.isUp) return resolve();
      const timer = Number.isFinite(timeoutMs)
        ? setTimeout(() => {
            this.upWaiters.delete(settle);
            reject(new HeraldError("timeout", `no session came up within ${timeoutMs} ms`));
          }, timeoutMs)
        : undefined;
      this.upWaiters.add(settle);
    });
  }

  private wakeUpWaiters(): void {
    for (const waiter of [...this.upWaiters]) waiter();
  }

  private pullPage(gid: Gid, after: Msgid): Promise<Page> {
    return this.requestNow("pull", { gid, after, limit: this.pullLimit });
  }

  // -------------------------------------------------------------------------------------
  // What the connection reports

  private up(hello: HelloFrame): void {
    this.uidValue = hello.uid;
    this.liveness.start(hello.heartbeat_s);
    this.events.emit("hello", hello);
    this.acks.hello(hello.groups);
    this.reads.hello(hello.groups);
    this.resume.hello(hello.groups);
    this.sends.up();
    if (this.syncEnabled) this.syncInBackground();
    for (const gid of this.presenceBook.watched()) {
      this.online(gid).catch((error: unknown) => this.background(error));
    }
    this.wakeUpWaiters();
  }

  private down(): void {
    this.liveness.stop();
    this.requests.failAll(new HeraldError("disconnected", "the session went down"));
  }

  private changeState(state: ConnectionState): void {
    if (state.status === "stopped" && this.closedError === undefined) {
      // The server's close code said not to come back: nothing can complete any more.
      this.closedError = new HeraldError("closed", `stopped by the server: ${state.meaning} (${state.code})`);
      for (const marks of [this.acks, this.reads]) marks.stop();
      this.sends.close(this.closedError);
      this.requests.failAll(this.closedError);
      this.wakeUpWaiters();
    }
    this.events.emit("state", state);
  }

  private frame(frame: ServerFrame): void {
    this.liveness.heard();
    switch (frame.type) {
      case "sent":
      case "msgs":
      case "pong":
      case "online":
      case "synced":
      case "recalled":
        this.requests.settle(frame);
        break;
      case "error":
        if (!this.requests.settle(frame)) this.background(new HeraldError(frame.code, frame.message));
        break;
      case "msg": {
        const { type: _type, ...message } = frame;
        this.resume.receive(message);
        break;
      }
      case "event": {
        const { type: _type, ...event } = frame;
        this.events.emit("event", event);
        this.applyEvent(event);
        break;
      }
      case "sync_notify": {
        const { type: _type, ...notice } = frame;
        this.events.emit("syncNotify", notice);
        if (this.syncEnabled && this.store.isBehind(notice)) this.syncInBackground();
        break;
      }
      case "friend_request": {
        const { type: _type, ...request } = frame;
        this.events.emit("friendRequest", request);
        break;
      }
      case "presence": {
        const change = { gid: frame.gid, uid: frame.uid, online: frame.online };
        if (this.presenceBook.apply(change)) this.events.emit("presence", change);
        break;
      }
      case "reads": {
        const { type: _type, ...reads } = frame;
        this.events.emit("reads", reads);
        break;
      }
      case "signal": {
        const { type: _type, ...signal } = frame;
        this.events.emit("signal", signal);
        break;
      }
      case "hello":
        // Only the first frame of a session; the connection handles it.
        break;
    }
  }

  private applyEvent(event: GroupEvent): void {
    if (!this.syncEnabled) return;
    switch (this.store.applyEvent(event)) {
      case "applied":
        this.events.emit("members", { gid: event.gid, group: this.store.group(event.gid) });
        break;
      case "gap":
        this.syncInBackground();
        break;
      case "already-held":
        break;
    }
    if ((event.event === "member_removed" && event.uid === this.uidValue) || event.event === "group_disbanded") {
      this.presenceBook.forget(event.gid);
    }
  }

  private deliver(message: Message): void {
    this.events.emit("message", message);
    if (this.autoAck) this.acks.mark(message.gid, message.msgid);
  }

  private syncInBackground(): void {
    this.sync().catch((error: unknown) => this.background(error));
  }

  /** A failure of work the client does on its own: reported, unless it is only the connection's. */
  private background(error: unknown): void {
    const failure = error instanceof HeraldError ? error : new HeraldError("internal", String(error));
    if (failure.code === "disconnected" || failure.code === "closed") return;
    this.events.emit("error", failure);
  }
}
