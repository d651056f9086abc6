/**
 * Local copies of what `sync` keeps up to date (docs/sync.md): the user's own profile, their
 * group list, each group's member list with the members' profiles, and their friend list.
 *
 * Each copy carries the versions it was read at. A `sync` sends them and gets back only
 * what changed; `sync_notify` says when something did. A pushed group event is applied at
 * once only when it is the very next one (`version` one above the copy's); otherwise the
 * copy may have missed one, and the client syncs instead.
 */

import type {
  FriendVersions,
  Gid,
  GroupEvent,
  GroupInfo,
  GroupListVersions,
  Role,
  SyncedFrame,
  SyncedGroup,
  SyncNotifyFrame,
  SyncVersions,
  Uid,
  UserInfo,
} from "./protocol.js";

/** One group's member list, read at `user_list_version` / `user_info_version`. */
export interface GroupCopy {
  readonly gid: Gid;
  readonly user_list_version: number;
  readonly user_info_version: number;
  /** Every member and their role. */
  readonly members: ReadonlyMap<Uid, Role>;
  /** The members' profiles, as far as sync has brought them. */
  readonly users: ReadonlyMap<Uid, UserInfo>;
}

/** What one sync reply (or event) changed, to tell the app. */
export interface SyncChanges {
  profile: boolean;
  groupList: boolean;
  groups: Gid[];
  friends: boolean;
}

/** How a pushed group event relates to the copy. */
export type EventFit = "applied" | "already-held" | "gap";

interface MutableGroupCopy {
  gid: Gid;
  user_list_version: number;
  user_info_version: number;
  members: Map<Uid, Role>;
  users: Map<Uid, UserInfo>;
}

export class SyncStore {
  private me: UserInfo | undefined;
  private groupListVersions: GroupListVersions = { group_list_version: 0, group_info_version: 0 };
  private readonly groupInfos = new Map<Gid, GroupInfo>();
  private readonly groupCopies = new Map<Gid, MutableGroupCopy>();
  private friendVersions: FriendVersions = { user_list_version: 0, user_info_version: 0 };
  private readonly friendUids = new Set<Uid>();
  private readonly friendUsers = new Map<Uid, UserInfo>();

  /** The user's own profile, once synced. */
  get profile(): UserInfo | undefined {
    return this.me;
  }

  /** The groups the user is in, with their info. */
  get groupList(): ReadonlyMap<Gid, GroupInfo> {
    return this.groupInfos;
  }

  /** A group's member list, once synced. */
  group(gid: Gid): GroupCopy | undefined {
    return this.groupCopies.get(gid);
  }

  /** The user's friends. */
  get friends(): ReadonlySet<Uid> {
    return this.friendUids;
  }

  /** The friends' profiles. */
  get friendProfiles(): ReadonlyMap<Uid, UserInfo> {
    return this.friendUsers;
  }

  /** The body of a `sync`: the versions of every copy held (0, or absent, for none). */
  versions(): SyncVersions {
    return {
      me: { user_info_version: this.me?.user_info_version ?? 0 },
      group_list: { ...this.groupListVersions },
      groups: [...this.groupCopies.values()].map((copy) => ({
        gid: copy.gid,
        user_list_version: copy.user_list_version,
        user_info_version: copy.user_info_version,
      })),
      friends: { ...this.friendVersions },
    };
  }

  /** Whether a notice names anything newer than the copies: then the client syncs. */
  isBehind(notice: Omit<SyncNotifyFrame, "type">): boolean {
    if (notice.me !== undefined && notice.me.user_info_version > (this.me?.user_info_version ?? 0)) return true;
    const list = notice.group_list;
    if (
      list !== undefined &&
      (list.group_list_version > this.groupListVersions.group_list_version ||
        list.group_info_version > this.groupListVersions.group_info_version)
    ) {
      return true;
    }
    const friends = notice.friends;
    if (
      friends !== undefined &&
      (friends.user_list_version > this.friendVersions.user_list_version ||
        friends.user_info_version > this.friendVersions.user_info_version)
    ) {
      return true;
    }
    return (notice.groups ?? []).some((group) => {
      const copy = this.groupCopies.get(group.gid);
      return (
        copy === undefined ||
        group.user_list_version > copy.user_list_version ||
        group.user_info_version > copy.user_info_version
      );
    });
  }

  /** A pushed event: applied if it is the next one of a group held. */
  applyEvent(event: GroupEvent): EventFit {
    const copy = this.groupCopies.get(event.gid);
    if (copy === undefined) return "gap";
    if (event.version <= copy.user_list_version) return "already-held";
    if (event.version !== copy.user_list_version + 1) return "gap";
    applyToMembers(copy, event);
    copy.user_list_version = event.version;
    return "applied";
  }

  /** Applies a `synced` reply to the copies the versions sent described. */
  apply(reply: SyncedFrame): SyncChanges {
    const changes: SyncChanges = { profile: false, groupList: false, groups: [], friends: false };

    if (reply.me !== undefined) {
      changes.profile = reply.me.user_info_version !== this.me?.user_info_version;
      this.me = reply.me;
    }

    const list = reply.group_list;
    if (list !== undefined) {
      if (list.snapshot) this.groupInfos.clear();
      for (const info of list.groups) this.groupInfos.set(info.gid, info);
      for (const gid of list.left) this.groupInfos.delete(gid);
      changes.groupList = list.snapshot || list.groups.length > 0 || list.left.length > 0;
      this.groupListVersions = {
        group_list_version: list.group_list_version,
        group_info_version: list.group_info_version,
      };
    }

    for (const group of reply.groups ?? []) {
      this.applyGroup(group);
      changes.groups.push(group.gid);
    }
    // Copies of groups the user is no longer in are dropped with the group list's entry.
    if (list !== undefined) {
      for (const gid of this.groupCopies.keys()) {
        if (!this.groupInfos.has(gid)) {
          this.groupCopies.delete(gid);
          changes.groups.push(gid);
        }
      }
    }

    const friends = reply.friends;
    if (friends !== undefined) {
      if (friends.snapshot) {
        this.friendUids.clear();
        this.friendUsers.clear();
      }
      for (const uid of friends.added) this.friendUids.add(uid);
      for (const uid of friends.removed) {
        this.friendUids.delete(uid);
        this.friendUsers.delete(uid);
      }
      for (const user of friends.users) {
        if (this.friendUids.has(user.uid)) this.friendUsers.set(user.uid, user);
      }
      changes.friends =
        friends.snapshot || friends.added.length > 0 || friends.removed.length > 0 || friends.users.length > 0;
      this.friendVersions = {
        user_list_version: friends.user_list_version,
        user_info_version: friends.user_info_version,
      };
    }
    return changes;
  }

  private applyGroup(group: SyncedGroup): void {
    let copy = this.groupCopies.get(group.gid);
    if (copy === undefined || group.snapshot) {
      copy = { gid: group.gid, user_list_version: 0, user_info_version: 0, members: new Map(), users: new Map() };
      this.groupCopies.set(group.gid, copy);
    }
    for (const member of group.members ?? []) copy.members.set(member.uid, member.role);
    for (const event of group.events ?? []) {
      // Events the copy already has (pushed ones applied meanwhile) are not applied twice.
      if (event.version > copy.user_list_version) applyToMembers(copy, event);
    }
    for (const user of group.users) {
      if (copy.members.has(user.uid)) copy.users.set(user.uid, user);
    }
    // A pushed event applied while the sync was on its way may be ahead of the reply.
    copy.user_list_version = Math.max(copy.user_list_version, group.user_list_version);
    copy.user_info_version = group.user_info_version;
  }
}

/** How each event kind changes a member list; unknown kinds change nothing. */
function applyToMembers(copy: MutableGroupCopy, event: GroupEvent): void {
  switch (event.event) {
    case "group_created":
      copy.members.clear();
      for (const uid of event.uids) copy.members.set(uid, uid === event.owner ? "owner" : "member");
      break;
    case "member_added":
    case "role_changed":
      copy.members.set(event.uid, event.role);
      break;
    case "member_removed":
      copy.members.delete(event.uid);
      copy.users.delete(event.uid);
      break;
    case "group_disbanded":
      copy.members.clear();
      copy.users.clear();
      break;
    case "group_updated":
      // The group's info lives in the group list, which its own versions bring up to date.
      break;
    case "message_recalled":
      // A message's tombstone: the member list is as it was.
      break;
  }
}
