/**
 * The frames of Herald's wire protocol (docs/protocol.md), as TypeScript types.
 *
 * Field names are the wire's own (snake_case) so that a frame can be read against the
 * protocol document line by line; nothing here renames or reshapes what the server sends.
 */

/** A user id: a JSON number, 1 ≤ id < 2^53. */
export type Uid = number;
/** A group id: a JSON number, 1 ≤ id < 2^53. */
export type Gid = number;
/** A message's place in its group: dense, from 1, assigned at commit. */
export type Msgid = number;
/** Milliseconds since the Unix epoch, server time. */
export type Millis = number;

/** Any JSON value: what a message body may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type Role = "owner" | "admin" | "member";

/** The error codes of the protocol's error table. */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "too_large"
  | "rate_limited"
  | "unavailable"
  | "internal";

// ---------------------------------------------------------------------------------------
// Shared shapes

/**
 * A group as `hello` lists it: how far the member received it (`last_ack`), how far they read
 * it (`last_read`; unread = latest − last_read) and the group's newest msgid.
 */
export interface GroupPosition {
  gid: Gid;
  last_ack: Msgid;
  last_read: Msgid;
  latest: Msgid;
}

/** How far a member has read a group. */
export interface ReadPosition {
  uid: Uid;
  msgid: Msgid;
}

/** Why a message has no body any more: recalled, or its sender's data erased. */
export type Tombstone = "recalled" | "erased";

/**
 * A stored message, as pushed (`msg`) or pulled (`msgs`). A tombstone keeps its place (and
 * msgid) but has no `body`, and says why in `tombstone`.
 */
export interface Message {
  gid: Gid;
  msgid: Msgid;
  from: Uid;
  ts: Millis;
  cmid: string;
  /** Exactly as sent; absent on a tombstone. */
  body?: Json;
  tombstone?: Tombstone;
}

/** A profile, each field with the version at which it last changed. */
export interface UserInfo {
  uid: Uid;
  nickname: string;
  avatar: string;
  signature: string;
  active: boolean;
  user_info_version: number;
  nickname_version: number;
  avatar_version: number;
  signature_version: number;
}

export interface GroupInfo {
  gid: Gid;
  name: string;
  description: string;
  owner: Uid;
  info_version: number;
}

export interface Member {
  uid: Uid;
  role: Role;
}

// ---------------------------------------------------------------------------------------
// Group events: pushed as `event` frames and returned by `sync` in `events`.

interface EventBase {
  gid: Gid;
  /** The event's place in the group's log: the group's user_list_version after it. */
  version: number;
  ts: Millis;
  /** The user who acted; absent when the admin API did. */
  by?: Uid;
}

export interface GroupCreated extends EventBase {
  event: "group_created";
  name: string;
  description: string;
  owner: Uid;
  /** The founding members, owner included. */
  uids: Uid[];
}
export interface MemberAdded extends EventBase {
  event: "member_added";
  uid: Uid;
  role: Role;
}
export interface MemberRemoved extends EventBase {
  event: "member_removed";
  uid: Uid;
  reason: "removed" | "left" | "deactivated";
}
export interface RoleChanged extends EventBase {
  event: "role_changed";
  uid: Uid;
  role: Role;
}
export interface GroupUpdated extends EventBase {
  event: "group_updated";
  name: string;
  description: string;
}
export interface GroupDisbanded extends EventBase {
  event: "group_disbanded";
}
/** A message was recalled: pulls now return its tombstone. */
export interface MessageRecalled extends EventBase {
  event: "message_recalled";
  msgid: Msgid;
}

/**
 * The event kinds this library knows. The server may add kinds; those still reach the
 * `event` listeners (typed as this union, with an `event` string not listed here) and move
 * the member list's version without changing it, as the protocol asks.
 */
export type GroupEvent =
  | GroupCreated
  | MemberAdded
  | MemberRemoved
  | RoleChanged
  | GroupUpdated
  | GroupDisbanded
  | MessageRecalled;

// ---------------------------------------------------------------------------------------
// Sync (docs/sync.md)

export interface GroupVersions {
  gid: Gid;
  user_list_version: number;
  user_info_version: number;
}
export interface GroupListVersions {
  group_list_version: number;
  group_info_version: number;
}
export interface FriendVersions {
  user_list_version: number;
  user_info_version: number;
}
export interface ProfileVersion {
  user_info_version: number;
}

/** What a `sync` names: the versions the client holds (absent or 0: "all of it"). */
export interface SyncVersions {
  me?: ProfileVersion;
  group_list?: GroupListVersions;
  groups?: GroupVersions[];
  friends?: FriendVersions;
}

export interface SyncedGroupList extends GroupListVersions {
  snapshot: boolean;
  groups: GroupInfo[];
  left: Gid[];
}
export interface SyncedGroup extends GroupVersions {
  snapshot: boolean;
  /** Incremental replies: the events since the version sent, in version order. */
  events?: GroupEvent[];
  /** Snapshots: every member with its role. */
  members?: Member[];
  users: UserInfo[];
}
export interface SyncedFriends extends FriendVersions {
  snapshot: boolean;
  added: Uid[];
  removed: Uid[];
  users: UserInfo[];
}

// ---------------------------------------------------------------------------------------
// Client → server

export interface SendFrame {
  type: "send";
  id: string;
  gid: Gid;
  cmid: string;
  body: Json;
}
export interface AckFrame {
  type: "ack";
  gid: Gid;
  msgid: Msgid;
}
export interface ReadFrame {
  type: "read";
  gid: Gid;
  msgid: Msgid;
}
export interface SignalFrame {
  type: "signal";
  gid: Gid;
  kind: string;
}
export interface PullFrame {
  type: "pull";
  id: string;
  gid: Gid;
  after: Msgid;
  limit: number;
}
export interface PingFrame {
  type: "ping";
  id: string;
}
export interface OnlineRequestFrame {
  type: "online";
  id: string;
  gid: Gid;
}
export interface SyncFrame extends SyncVersions {
  type: "sync";
  id: string;
}
export interface RecallFrame {
  type: "recall";
  id: string;
  gid: Gid;
  msgid: Msgid;
}

export type ClientFrame =
  | SendFrame
  | AckFrame
  | ReadFrame
  | SignalFrame
  | PullFrame
  | PingFrame
  | OnlineRequestFrame
  | SyncFrame
  | RecallFrame;
/** The client frames that get a reply, matched to it by `id`. */
export type RequestFrame = SendFrame | PullFrame | PingFrame | OnlineRequestFrame | SyncFrame | RecallFrame;

// ---------------------------------------------------------------------------------------
// Server → client

export interface HelloFrame {
  type: "hello";
  uid: Uid;
  session: string;
  heartbeat_s: number;
  groups: GroupPosition[];
}
export interface SentFrame {
  type: "sent";
  id: string;
  gid: Gid;
  msgid: Msgid;
  ts: Millis;
  dup: boolean;
}
export interface MsgsFrame {
  type: "msgs";
  id: string;
  gid: Gid;
  msgs: Message[];
  more: boolean;
  /** The group's first retained msgid, when retention pruned messages after `after`. */
  first?: Msgid;
}
export interface PongFrame {
  type: "pong";
  id: string;
}
export interface OnlineFrame {
  type: "online";
  id: string;
  gid: Gid;
  uids: Uid[];
}
export interface SyncedFrame {
  type: "synced";
  id: string;
  me?: UserInfo;
  group_list?: SyncedGroupList;
  groups?: SyncedGroup[];
  friends?: SyncedFriends;
}
export interface RecalledFrame {
  type: "recalled";
  id: string;
  gid: Gid;
  msgid: Msgid;
}
export interface ErrorFrame {
  type: "error";
  id?: string | number;
  code: ErrorCode;
  message: string;
}
export type MsgFrame = { type: "msg" } & Message;
export type EventFrame = { type: "event" } & GroupEvent;
export interface SyncNotifyFrame {
  type: "sync_notify";
  groups?: GroupVersions[];
  group_list?: GroupListVersions;
  friends?: FriendVersions;
  me?: ProfileVersion;
}
export interface FriendRequestFrame {
  type: "friend_request";
  from: Uid;
  ts: Millis;
}
export interface PresenceFrame {
  type: "presence";
  gid: Gid;
  uid: Uid;
  online: boolean;
}
export interface ReadsFrame {
  type: "reads";
  gid: Gid;
  reads: ReadPosition[];
}
export interface SignalPushFrame {
  type: "signal";
  gid: Gid;
  from: Uid;
  kind: string;
}

/** The reply each request gets, by the request's `type`. */
export interface ReplyTo {
  send: SentFrame;
  pull: MsgsFrame;
  ping: PongFrame;
  online: OnlineFrame;
  sync: SyncedFrame;
  recall: RecalledFrame;
}
export type ReplyFrame = ReplyTo[keyof ReplyTo];

export type ServerFrame =
  | HelloFrame
  | ReplyFrame
  | ErrorFrame
  | MsgFrame
  | EventFrame
  | SyncNotifyFrame
  | FriendRequestFrame
  | PresenceFrame
  | ReadsFrame
  | SignalPushFrame;

/**
 * Reads one text frame. The server is trusted to send the shapes the protocol documents, so
 * only the envelope is checked: a JSON object with a string `type`. Anything else is
 * `undefined`, and the caller ignores it (clients must ignore what they do not know).
 */
export function parseServerFrame(text: string): ServerFrame | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  if (typeof (value as { type?: unknown }).type !== "string") return undefined;
  return value as ServerFrame;
}

/** The `type` of the reply each request gets. */
export const REPLY_TYPE: { readonly [K in keyof ReplyTo]: ReplyTo[K]["type"] } = {
  send: "sent",
  pull: "msgs",
  ping: "pong",
  online: "online",
  sync: "synced",
  recall: "recalled",
};
