/**
 * Who of a group is online, for the groups the app asked about. Presence is a view of who
 * holds sessions, never stored: after a reconnect the client asks `online` again for each
 * group it watched, and reports the differences as `presence` changes, so the app's view
 * stays right across the gap.
 */

import type { Gid, Uid } from "./protocol.js";

export interface PresenceChange {
  gid: Gid;
  uid: Uid;
  online: boolean;
}

export class PresenceBook {
  private readonly online = new Map<Gid, Set<Uid>>();

  /** The groups whose presence the app asked for. */
  watched(): Gid[] {
    return [...this.online.keys()];
  }

  /** Who is online in `gid`, as last known; undefined for a group never asked about. */
  members(gid: Gid): ReadonlySet<Uid> | undefined {
    return this.online.get(gid);
  }

  /** An `online` answer. Returns how it differs from what was known before (nothing, the first time). */
  answer(gid: Gid, uids: readonly Uid[]): PresenceChange[] {
    const before = this.online.get(gid);
    const now = new Set(uids);
    this.online.set(gid, now);
    if (before === undefined) return [];
    const changes: PresenceChange[] = [];
    for (const uid of now) if (!before.has(uid)) changes.push({ gid, uid, online: true });
    for (const uid of before) if (!now.has(uid)) changes.push({ gid, uid, online: false });
    return changes;
  }

  /** A `presence` frame; false if it changes nothing known. */
  apply(change: PresenceChange): boolean {
    const set = this.online.get(change.gid);
    if (set === undefined) return true;
    if (set.has(change.uid) === change.online) return false;
    if (change.online) set.add(change.uid);
    else set.delete(change.uid);
    return true;
  }

  forget(gid: Gid): void {
    this.online.delete(gid);
  }
}
