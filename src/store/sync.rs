//! The reads of a `sync`: everything that changed since a client's versions, read from one
//! consistent snapshot (`docs/sync.md`).

use std::collections::HashMap;

use tokio_postgres::IsolationLevel;

use super::directory::{group_info, profile_query, user_info, USER_INFO_COLUMNS};
use super::{db, id, timed, Param, Store, StoreError};
use crate::model::event::LoggedEvent;
use crate::model::refusal::Refusal;
use crate::model::sync::{
    FriendSync, FriendVersions, GroupListSync, GroupListVersions, GroupSync, GroupVersions, Member,
    SyncReply, SyncRequest, UserInfo,
};
use crate::model::Role;

const USER_VERSIONS: &str = "
    SELECT group_list_version, group_info_version, friend_list_version, friend_info_version
    FROM user_versions WHERE uid = $1";

/// The user's groups joined since a version, or whose info changed since another; all of
/// them when $2 (snapshot).
const GROUP_LIST_CHANGES: &str = "
    SELECT g.gid, g.name, g.description, g.owner_uid, g.info_version
    FROM group_members m JOIN groups g ON g.gid = m.gid
    WHERE m.uid = $1 AND ($2 OR m.group_list_version > $3 OR m.group_info_version > $4)
    ORDER BY g.gid";

const GROUPS_LEFT: &str = "
    SELECT gid FROM group_departures
    WHERE uid = $1 AND group_list_version > $2
    ORDER BY gid";

/// Each group of the user with its versions and the oldest event its log still holds.
const MY_GROUP_VERSIONS: &str = "
    SELECT m.gid, coalesce(v.user_list_version, 0), coalesce(v.user_info_version, 0),
           (SELECT min(e.version) FROM group_events e WHERE e.gid = m.gid)
    FROM group_members m LEFT JOIN group_versions v ON v.gid = m.gid
    WHERE m.uid = $1
    ORDER BY m.gid";

/// Each body is a [`LoggedEvent`], as `herald_event` wrote it.
const EVENTS_AFTER: &str = "
    SELECT e.gid, e.version, e.body::text
    FROM unnest($1::bigint[], $2::bigint[]) AS c (gid, after)
    JOIN group_events e ON e.gid = c.gid AND e.version > c.after
    ORDER BY e.gid, e.version";

/// One group's logged events between two versions, oldest first, a page at a time.
const EVENTS_BETWEEN: &str = "
    SELECT version, body::text FROM group_events
    WHERE gid = $1 AND version > $2 AND version < $3
    ORDER BY version
    LIMIT 1000";

const MEMBERS_OF: &str = "
    SELECT gid, uid, role FROM group_members WHERE gid = ANY ($1::bigint[]) ORDER BY gid, uid";

fn member_profiles_query() -> String {
    format!(
        "SELECT m.gid, {USER_INFO_COLUMNS}
         FROM unnest($1::bigint[], $2::bigint[]) AS c (gid, after)
         JOIN group_members m ON m.gid = c.gid AND m.user_info_version > c.after
         JOIN users u ON u.uid = m.uid
         ORDER BY m.gid, u.uid"
    )
}

/// The user's friend rows that changed since a version; every active one when $2.
const FRIEND_LIST_CHANGES: &str = "
    SELECT friend_uid, active FROM friends
    WHERE uid = $1 AND (($2 AND active) OR (NOT $2 AND user_list_version > $3))
    ORDER BY friend_uid";

fn friend_profiles_query() -> String {
    format!(
        "SELECT {USER_INFO_COLUMNS} FROM friends f JOIN users u ON u.uid = f.friend_uid
         WHERE f.uid = $1 AND f.active AND f.user_info_version > $2
         ORDER BY u.uid"
    )
}

/// How one group is to be synced.
struct GroupPlan {
    now: GroupVersions,
    snapshot: bool,
    /// Events and profiles above these versions are sent.
    events_after: i64,
    profiles_after: i64,
}

/// Whether a client's versions of a scope can be brought up to date incrementally: they
/// are not 0 ("everything") and not ahead of the server's (a client of another database).
fn incremental(theirs: u64, ours: u64) -> bool {
    theirs != 0 && theirs <= ours
}

impl Store {
    /// The group's logged events with versions `after < version < before`, oldest first, at
    /// most a page of them: what a node missed of a group's changes.
    pub async fn events_between(
        &self,
        gid: u64,
        after: u64,
        before: u64,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let _t = timed("events_between");
        let client = self.client().await?;
        let stmt = client.prepare_cached(EVENTS_BETWEEN).await?;
        let rows = client
            .query(&stmt, &[&db(gid), &db(after), &db(before)])
            .await?;
        rows.iter()
            .map(|row| {
                let (version, body) = (id(row.get(0)), row.get::<_, &str>(1));
                serde_json::from_str(body).map_err(|e| {
                    StoreError::Corrupt(format!("event {version} of group {gid}: {body}: {e}"))
                })
            })
            .collect()
    }

    /// What changed for `uid` since the versions of `request`.
    pub async fn sync(&self, uid: u64, request: &SyncRequest) -> Result<SyncReply, StoreError> {
        let _place = self.read_permit().await;
        let _t = timed("sync");
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let profile_sql = profile_query();
        let friend_profiles_sql = friend_profiles_query();
        let (profile, versions, group_list, groups_left, my_groups, friend_list, friend_profiles) =
            futures_util::try_join!(
                tx.prepare_cached(&profile_sql),
                tx.prepare_cached(USER_VERSIONS),
                tx.prepare_cached(GROUP_LIST_CHANGES),
                tx.prepare_cached(GROUPS_LEFT),
                tx.prepare_cached(MY_GROUP_VERSIONS),
                tx.prepare_cached(FRIEND_LIST_CHANGES),
                tx.prepare_cached(&friend_profiles_sql),
            )?;

        // First the user's own rows: versions decide what else to read.
        let uid_param = db(uid);
        let by_uid: [Param; 1] = [&uid_param];
        let (me, version_row, my_groups) = futures_util::try_join!(
            tx.query_opt(&profile, &by_uid),
            tx.query_opt(&versions, &by_uid),
            tx.query(&my_groups, &by_uid),
        )?;
        let me = me
            .map(|row| user_info(&row, 0))
            .ok_or(StoreError::Refused(Refusal::UserMissing { uid }))?;
        let version = |at: usize| version_row.as_ref().map_or(0, |row| id(row.get(at)));
        let list_now = GroupListVersions {
            group_list_version: version(0),
            group_info_version: version(1),
        };
        let friends_now = FriendVersions {
            user_list_version: version(2),
            user_info_version: version(3),
        };

        let theirs = request.group_list;
        let list_snapshot = !incremental(theirs.group_list_version, list_now.group_list_version)
            || theirs.group_info_version > list_now.group_info_version;
        let friends_theirs = request.friends;
        let friends_snapshot = !incremental(
            friends_theirs.user_list_version,
            friends_now.user_list_version,
        );
        let friend_profiles_after = if friends_snapshot
            || friends_theirs.user_info_version > friends_now.user_info_version
        {
            -1
        } else {
            db(friends_theirs.user_info_version)
        };

        let plans = plan_groups(request, &my_groups);
        let (gids, events_after): (Vec<i64>, Vec<i64>) = plans
            .iter()
            .filter(|p| !p.snapshot)
            .map(|p| (db(p.now.gid), p.events_after))
            .unzip();
        let snapshot_gids: Vec<i64> = plans
            .iter()
            .filter(|p| p.snapshot)
            .map(|p| db(p.now.gid))
            .collect();
        let (profile_gids, profiles_after): (Vec<i64>, Vec<i64>) = plans
            .iter()
            .map(|p| (db(p.now.gid), p.profiles_after))
            .unzip();

        let member_profiles_sql = member_profiles_query();
        let (events, members, member_profiles) = futures_util::try_join!(
            tx.prepare_cached(EVENTS_AFTER),
            tx.prepare_cached(MEMBERS_OF),
            tx.prepare_cached(&member_profiles_sql),
        )?;
        let (list_version, info_version) =
            (db(theirs.group_list_version), db(theirs.group_info_version));
        let friend_list_version = db(friends_theirs.user_list_version);
        let group_list_params: [Param; 4] =
            [&uid_param, &list_snapshot, &list_version, &info_version];
        let groups_left_params: [Param; 2] = [&uid_param, &list_version];
        let friend_list_params: [Param; 3] = [&uid_param, &friends_snapshot, &friend_list_version];
        let friend_profiles_params: [Param; 2] = [&uid_param, &friend_profiles_after];
        let events_params: [Param; 2] = [&gids, &events_after];
        let members_params: [Param; 1] = [&snapshot_gids];
        let profiles_params: [Param; 2] = [&profile_gids, &profiles_after];
        let (group_list, groups_left, friend_list, friend_profiles, events, members, profiles) = futures_util::try_join!(
            tx.query(&group_list, &group_list_params),
            tx.query(&groups_left, &groups_left_params),
            tx.query(&friend_list, &friend_list_params),
            tx.query(&friend_profiles, &friend_profiles_params),
            tx.query(&events, &events_params),
            tx.query(&members, &members_params),
            tx.query(&member_profiles, &profiles_params),
        )?;
        tx.commit().await?;

        let mut events_by_group: HashMap<u64, Vec<LoggedEvent>> = HashMap::new();
        for row in &events {
            let (gid, version, body) = (id(row.get(0)), id(row.get(1)), row.get::<_, &str>(2));
            let event = serde_json::from_str(body).map_err(|e| {
                StoreError::Corrupt(format!("event {version} of group {gid}: {body}: {e}"))
            })?;
            events_by_group.entry(gid).or_default().push(event);
        }
        let mut members_by_group: HashMap<u64, Vec<Member>> = HashMap::new();
        for row in &members {
            let role: &str = row.get(2);
            let role = Role::parse(role)
                .ok_or_else(|| StoreError::Corrupt(format!("member role {role}")))?;
            members_by_group
                .entry(id(row.get(0)))
                .or_default()
                .push(Member {
                    uid: id(row.get(1)),
                    role,
                });
        }
        let mut profiles_by_group: HashMap<u64, Vec<UserInfo>> = HashMap::new();
        for row in &profiles {
            profiles_by_group
                .entry(id(row.get(0)))
                .or_default()
                .push(user_info(row, 1));
        }
        let groups = plans
            .into_iter()
            .map(|plan| {
                let gid = plan.now.gid;
                GroupSync {
                    versions: plan.now,
                    snapshot: plan.snapshot,
                    events: (!plan.snapshot)
                        .then(|| events_by_group.remove(&gid).unwrap_or_default()),
                    members: plan
                        .snapshot
                        .then(|| members_by_group.remove(&gid).unwrap_or_default()),
                    users: profiles_by_group.remove(&gid).unwrap_or_default(),
                }
            })
            .collect();

        let (added, removed): (Vec<_>, Vec<_>) =
            friend_list.iter().partition(|row| row.get::<_, bool>(1));
        Ok(SyncReply {
            me,
            group_list: GroupListSync {
                versions: list_now,
                snapshot: list_snapshot,
                groups: group_list.iter().map(group_info).collect(),
                left: if list_snapshot {
                    Vec::new()
                } else {
                    groups_left.iter().map(|r| id(r.get(0))).collect()
                },
            },
            groups,
            friends: FriendSync {
                versions: friends_now,
                snapshot: friends_snapshot,
                added: added.iter().map(|r| id(r.get(0))).collect(),
                removed: removed.iter().map(|r| id(r.get(0))).collect(),
                users: friend_profiles.iter().map(|r| user_info(r, 0)).collect(),
            },
        })
    }
}

/// Decides, for each group the user is in, whether it is synced and how: groups the client
/// did not name are synced from 0; named groups whose versions match are left out.
fn plan_groups(request: &SyncRequest, my_groups: &[tokio_postgres::Row]) -> Vec<GroupPlan> {
    let theirs: HashMap<u64, GroupVersions> = request.groups.iter().map(|g| (g.gid, *g)).collect();
    my_groups
        .iter()
        .filter_map(|row| {
            let now = GroupVersions {
                gid: id(row.get(0)),
                user_list_version: id(row.get(1)),
                user_info_version: id(row.get(2)),
            };
            let oldest_event: Option<i64> = row.get(3);
            let held = theirs.get(&now.gid).copied().unwrap_or(GroupVersions {
                gid: now.gid,
                ..GroupVersions::default()
            });
            if held == now && held.user_list_version != 0 {
                return None;
            }
            // Incremental only while the log still holds every event after the client's.
            let events_kept = match oldest_event {
                Some(oldest) => id(oldest) <= held.user_list_version + 1,
                None => held.user_list_version == now.user_list_version,
            };
            let snapshot = !incremental(held.user_list_version, now.user_list_version)
                || !events_kept
                || held.user_info_version > now.user_info_version;
            Some(GroupPlan {
                now,
                snapshot,
                events_after: db(held.user_list_version),
                profiles_after: if snapshot {
                    -1
                } else {
                    db(held.user_info_version)
                },
            })
        })
        .collect()
}
