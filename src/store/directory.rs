//! Profiles, groups and friends: every change is one call of a function of
//! `sql/functions/` — one transaction, one round trip — which moves the versions, writes
//! the group events and reports the change's [`Effect`]s for the gateway to publish.

use serde::Deserialize;
use tokio_postgres::error::SqlState;

use super::{db, id, timed, Param, Store, StoreError};
use crate::model::effect::Effect;
use crate::model::refusal::Refusal;
use crate::model::sync::{GroupEdit, GroupInfo, ProfileEdit, UserInfo};
use crate::model::Role;

/// A user to create or update; absent profile fields are left as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpsert {
    pub uid: u64,
    pub nickname: Option<String>,
    pub avatar: Option<String>,
    pub signature: Option<String>,
}

impl UserUpsert {
    pub fn new(uid: u64, edit: ProfileEdit) -> UserUpsert {
        UserUpsert {
            uid,
            nickname: edit.nickname,
            avatar: edit.avatar,
            signature: edit.signature,
        }
    }

    pub fn edit(&self) -> ProfileEdit {
        ProfileEdit {
            nickname: self.nickname.clone(),
            avatar: self.avatar.clone(),
            signature: self.signature.clone(),
        }
    }
}

/// A group to create.
#[derive(Debug, Clone)]
pub struct NewGroup<'a> {
    /// Chosen by the admin API, else assigned.
    pub gid: Option<u64>,
    pub name: &'a str,
    pub description: &'a str,
    pub owner: u64,
    pub members: &'a [u64],
}

/// Whether a friend request made a friendship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FriendRequest {
    Requested,
    Friends,
}

/// A user's friends and pending requests.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Friends {
    pub friends: Vec<UserInfo>,
    pub requests_in: Vec<u64>,
    pub requests_out: Vec<u64>,
}

const UPSERT_USERS: &str = "
    SELECT unnest(herald_upsert_users($1::bigint[], $2::text[], $3::text[], $4::text[]))::text";

const CREATE_GROUP: &str = "
    SELECT new_gid, effects::text[]
    FROM herald_create_group($1, $2, $3, $4, $5::bigint[], $6)";

const ADD_TO_GROUP: &str = "SELECT unnest(herald_add_to_group($1, $2::bigint[], $3))::text";

const REMOVE_FROM_GROUP: &str = "SELECT unnest(herald_remove_from_group($1, $2, $3))::text";

const SET_ROLE: &str = "SELECT unnest(herald_set_role($1, $2, $3, $4))::text";

const UPDATE_GROUP: &str = "SELECT unnest(herald_update_group($1, $2, $3, $4))::text";

const DISBAND_GROUP: &str = "SELECT unnest(herald_disband_group($1, $2))::text";

const REQUEST_FRIEND: &str = "
    SELECT status, effects::text[] FROM herald_request_friend($1, $2)";

const SET_FRIENDSHIP: &str = "SELECT unnest(herald_befriend($1, $2, $3))::text";

const DEACTIVATE: &str = "SELECT unnest(herald_deactivate($1))::text";

const TRIM_EVENTS: &str = "SELECT herald_trim_events($1)";

const RECALL: &str = "SELECT unnest(herald_recall($1, $2, $3, $4))::text";

/// The columns of a [`UserInfo`], in the order `user_info` reads them from `u`.
pub(super) const USER_INFO_COLUMNS: &str = "u.uid, u.nickname, u.avatar, u.signature, u.active,
    u.user_info_version, u.nickname_version, u.avatar_version, u.signature_version";

pub(super) fn profile_query() -> String {
    format!("SELECT {USER_INFO_COLUMNS} FROM users u WHERE u.uid = $1")
}

const GROUP_INFO: &str = "
    SELECT gid, name, description, owner_uid, info_version FROM groups
    WHERE gid = $1 AND NOT disbanded";

fn friends_query() -> String {
    format!(
        "SELECT {USER_INFO_COLUMNS} FROM friends f JOIN users u ON u.uid = f.friend_uid
         WHERE f.uid = $1 AND f.active ORDER BY u.uid"
    )
}

const FRIEND_REQUESTS: &str = "
    SELECT from_uid, to_uid FROM friend_requests
    WHERE to_uid = $1 OR from_uid = $1
    ORDER BY ts, from_uid, to_uid";

/// Reads a [`UserInfo`] from `USER_INFO_COLUMNS`, starting at column `at`.
pub(super) fn user_info(row: &tokio_postgres::Row, at: usize) -> UserInfo {
    UserInfo {
        uid: id(row.get(at)),
        nickname: row.get(at + 1),
        avatar: row.get(at + 2),
        signature: row.get(at + 3),
        active: row.get(at + 4),
        user_info_version: id(row.get(at + 5)),
        nickname_version: id(row.get(at + 6)),
        avatar_version: id(row.get(at + 7)),
        signature_version: id(row.get(at + 8)),
    }
}

pub(super) fn group_info(row: &tokio_postgres::Row) -> GroupInfo {
    GroupInfo {
        gid: id(row.get(0)),
        name: row.get(1),
        description: row.get(2),
        owner: id(row.get(3)),
        info_version: id(row.get(4)),
    }
}

/// Decodes the effects a change function returned, one JSON object each.
pub(super) fn effects(texts: impl IntoIterator<Item = String>) -> Result<Vec<Effect>, StoreError> {
    texts
        .into_iter()
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("effect {text}: {e}")))
        })
        .collect()
}

/// How many times a change is tried when PostgreSQL breaks a deadlock between writers.
const DEADLOCK_ATTEMPTS: usize = 3;

impl Store {
    /// Runs one change function and returns its rows. A change that PostgreSQL chose as a
    /// deadlock victim was rolled back entirely, so it is simply run again.
    pub(super) async fn change(
        &self,
        op: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let _t = timed(op);
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        let mut attempt = 1;
        loop {
            match client.query(&stmt, params).await {
                Err(e)
                    if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                        && attempt < DEADLOCK_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
                Ok(rows) => return Ok(rows),
            }
        }
    }

    /// Runs a change function that returns its effects one per row.
    async fn change_effects(
        &self,
        op: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Effect>, StoreError> {
        let rows = self.change(op, sql, params).await?;
        effects(rows.iter().map(|r| r.get(0)))
    }

    /// Creates users and applies the profile fields given to those that exist (deactivated
    /// users stay so).
    pub async fn upsert_users(&self, users: &[UserUpsert]) -> Result<Vec<Effect>, StoreError> {
        let uids: Vec<i64> = users.iter().map(|u| db(u.uid)).collect();
        let field = |get: fn(&UserUpsert) -> &Option<String>| -> Vec<Option<&str>> {
            users.iter().map(|u| get(u).as_deref()).collect()
        };
        let (nicknames, avatars, signatures) = (
            field(|p| &p.nickname),
            field(|p| &p.avatar),
            field(|p| &p.signature),
        );
        self.change_effects(
            "upsert_users",
            UPSERT_USERS,
            &[&uids, &nicknames, &avatars, &signatures],
        )
        .await
    }

    /// Applies profile fields to an existing user.
    pub async fn update_profile(
        &self,
        uid: u64,
        edit: ProfileEdit,
    ) -> Result<Vec<Effect>, StoreError> {
        self.upsert_users(&[UserUpsert::new(uid, edit)]).await
    }

    /// A user's profile.
    pub async fn profile(&self, uid: u64) -> Result<UserInfo, StoreError> {
        let _t = timed("profile");
        let client = self.client().await?;
        let stmt = client.prepare_cached(&profile_query()).await?;
        client
            .query_opt(&stmt, &[&db(uid)])
            .await?
            .map(|row| user_info(&row, 0))
            .ok_or(StoreError::Refused(Refusal::UserMissing { uid }))
    }

    /// Creates a group; `by` is the user creating it (`None` for the admin API).
    pub async fn create_group(
        &self,
        group: &NewGroup<'_>,
        by: Option<u64>,
    ) -> Result<(u64, Vec<Effect>), StoreError> {
        let members: Vec<i64> = group.members.iter().copied().map(db).collect();
        let rows = self
            .change(
                "create_group",
                CREATE_GROUP,
                &[
                    &group.gid.map(db),
                    &group.name,
                    &group.description,
                    &db(group.owner),
                    &members,
                    &by.map(db),
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("herald_create_group returned no row".to_owned()))?;
        Ok((id(row.get(0)), effects(row.get::<_, Vec<String>>(1))?))
    }

    /// A live group's info.
    pub async fn group_info(&self, gid: u64) -> Result<GroupInfo, StoreError> {
        let _t = timed("group_info");
        let client = self.client().await?;
        let stmt = client.prepare_cached(GROUP_INFO).await?;
        client
            .query_opt(&stmt, &[&db(gid)])
            .await?
            .map(|row| group_info(&row))
            .ok_or(StoreError::Refused(Refusal::GroupMissing { gid }))
    }

    /// Adds members (active users; those already members are left alone).
    pub async fn add_to_group(
        &self,
        gid: u64,
        uids: &[u64],
        by: Option<u64>,
    ) -> Result<Vec<Effect>, StoreError> {
        let uids: Vec<i64> = uids.iter().copied().map(db).collect();
        self.change_effects(
            "add_to_group",
            ADD_TO_GROUP,
            &[&db(gid), &uids, &by.map(db)],
        )
        .await
    }

    /// Removes a member; `by == Some(uid)` is a quit. No effects for a non-member.
    pub async fn remove_from_group(
        &self,
        gid: u64,
        uid: u64,
        by: Option<u64>,
    ) -> Result<Vec<Effect>, StoreError> {
        self.change_effects(
            "remove_from_group",
            REMOVE_FROM_GROUP,
            &[&db(gid), &db(uid), &by.map(db)],
        )
        .await
    }

    pub async fn set_role(
        &self,
        gid: u64,
        uid: u64,
        role: Role,
        by: Option<u64>,
    ) -> Result<Vec<Effect>, StoreError> {
        self.change_effects(
            "set_role",
            SET_ROLE,
            &[&db(gid), &db(uid), &role.as_str(), &by.map(db)],
        )
        .await
    }

    pub async fn update_group(
        &self,
        gid: u64,
        edit: &GroupEdit,
        by: Option<u64>,
    ) -> Result<Vec<Effect>, StoreError> {
        self.change_effects(
            "update_group",
            UPDATE_GROUP,
            &[&db(gid), &edit.name, &edit.description, &by.map(db)],
        )
        .await
    }

    pub async fn disband_group(
        &self,
        gid: u64,
        by: Option<u64>,
    ) -> Result<Vec<Effect>, StoreError> {
        self.change_effects("disband_group", DISBAND_GROUP, &[&db(gid), &by.map(db)])
            .await
    }

    /// `from` asks `to` to be friends; they are once both have asked.
    pub async fn request_friend(
        &self,
        from: u64,
        to: u64,
    ) -> Result<(FriendRequest, Vec<Effect>), StoreError> {
        let rows = self
            .change("request_friend", REQUEST_FRIEND, &[&db(from), &db(to)])
            .await?;
        let row = rows.first().ok_or_else(|| {
            StoreError::Corrupt("herald_request_friend returned no row".to_owned())
        })?;
        let status = match row.get::<_, &str>(0) {
            "friends" => FriendRequest::Friends,
            _ => FriendRequest::Requested,
        };
        Ok((status, effects(row.get::<_, Vec<String>>(1))?))
    }

    /// Makes two users friends at once (`true`), or ends their friendship and any request
    /// between them (`false`).
    pub async fn set_friendship(
        &self,
        a: u64,
        b: u64,
        friends: bool,
    ) -> Result<Vec<Effect>, StoreError> {
        self.change_effects(
            "set_friendship",
            SET_FRIENDSHIP,
            &[&db(a), &db(b), &friends],
        )
        .await
    }

    /// A user's friends (with their profiles) and the requests to and from them.
    pub async fn friends(&self, uid: u64) -> Result<Friends, StoreError> {
        let _t = timed("friends");
        let client = self.client().await?;
        let friends_sql = friends_query();
        let (friends, requests) = futures_util::try_join!(
            client.prepare_cached(&friends_sql),
            client.prepare_cached(FRIEND_REQUESTS)
        )?;
        let by_uid: [Param; 1] = [&db(uid)];
        let (friends, requests) = futures_util::try_join!(
            client.query(&friends, &by_uid),
            client.query(&requests, &by_uid)
        )?;
        let pairs = requests.iter().map(|r| (id(r.get(0)), id(r.get(1))));
        Ok(Friends {
            friends: friends.iter().map(|r| user_info(r, 0)).collect(),
            requests_in: pairs.clone().filter(|p| p.1 == uid).map(|p| p.0).collect(),
            requests_out: pairs.filter(|p| p.0 == uid).map(|p| p.1).collect(),
        })
    }

    /// Deactivates a user, in one transaction: they leave every group (each group logs a
    /// `member_removed`, reason deactivated) and every friend list.
    pub async fn deactivate_user(&self, uid: u64) -> Result<Vec<Effect>, StoreError> {
        self.change_effects("deactivate_user", DEACTIVATE, &[&db(uid)])
            .await
    }

    /// Recalls a message of a group: its body goes, its row and msgid stay (a tombstone),
    /// and the group logs `message_recalled`. `by` is the member asking (`None`: the admin
    /// API); a plain member recalls only their own messages within `window_ms`. A message
    /// that is a tombstone already is left as it is, with no effects.
    pub async fn recall_message(
        &self,
        gid: u64,
        msgid: u64,
        by: Option<u64>,
        window_ms: u64,
    ) -> Result<Vec<Effect>, StoreError> {
        let window_ms = i64::try_from(window_ms).unwrap_or(i64::MAX);
        self.change_effects(
            "recall_message",
            RECALL,
            &[&db(gid), &db(msgid), &by.map(db), &window_ms],
        )
        .await
    }

    /// Drops each group's events older than its newest `keep`; returns how many went.
    pub async fn trim_events(&self, keep: u64) -> Result<u64, StoreError> {
        let rows = self
            .change("trim_events", TRIM_EVENTS, &[&db(keep)])
            .await?;
        Ok(rows.first().map_or(0, |r| id(r.get(0))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_effect_that_does_not_decode_is_corrupt_data_naming_it() {
        let joined = r#"{"effect": "joined", "gid": 7, "uid": 3}"#;
        assert_eq!(
            effects([joined.to_owned()]).unwrap(),
            [Effect::Joined { gid: 7, uid: 3 }]
        );
        let frame = r#"{"effect": "frame", "uid": 3, "frame": {"type": "friend_request"}}"#;
        match effects([joined.to_owned(), frame.to_owned()]) {
            Err(StoreError::Corrupt(what)) => assert!(what.contains(frame), "{what}"),
            other => panic!("decoded as {other:?}"),
        }
    }
}
