//! A user's data (issue 14): everything stored about them, read for an export, and its
//! erasure in the idempotent steps of `sql/functions/erasure.sql`. Messages are read and
//! erased in bounded batches, in (gid, msgid) order along the `group_msgs_by_sender` index:
//! a user with 100k messages never has more than one batch of them in memory, nor holds a
//! transaction open longer than one batch.

use serde::Serialize;
use utoipa::ToSchema;

use super::directory::{profile_query, user_info};
use super::{db, id, message_view, timed, Conversation, Param, Store, StoreError};
use crate::model::effect::Effect;
use crate::model::refusal::Refusal;
use crate::model::sync::UserInfo;
use crate::model::{MessageView, Role};

/// Everything stored about a user but their messages, which an export streams after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserRecord {
    pub profile: ExportedProfile,
    pub groups: Vec<ExportedMembership>,
    /// The user's own friend rows: friendships, and those that ended (`active: false`).
    pub friends: Vec<ExportedFriend>,
    /// Pending requests to and from the user.
    pub friend_requests: Vec<ExportedRequest>,
    pub conversations: Vec<Conversation>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedProfile {
    #[serde(flatten)]
    pub info: UserInfo,
    /// When the user was created, ms since the epoch.
    pub created_at: i64,
    /// When their data was erased, ms since the epoch; absent if never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<i64>,
}

/// A group the user is a member of.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedMembership {
    pub gid: u64,
    pub name: String,
    pub role: Role,
    /// When they joined, ms since the epoch.
    pub joined_at: i64,
    pub last_ack: u64,
    pub last_read: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedFriend {
    pub uid: u64,
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedRequest {
    pub from: u64,
    pub to: u64,
    pub ts: i64,
}

/// What one erasure did; a rerun of a finished one counts zeros.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErasureCounts {
    /// Groups the user left (each told `member_removed`, reason `deactivated`).
    pub groups_left: u64,
    /// Messages that became `erased` tombstones.
    pub messages_erased: u64,
    /// Friendships ended.
    pub friends_removed: u64,
    /// Friend requests to or from the user dropped.
    pub requests_removed: u64,
    pub conversations_removed: u64,
}

/// Where a batch of a user's messages ends: the (gid, msgid) the next one starts after.
pub type MessageKey = (u64, u64);

const USER_CREATED: &str = "
    SELECT (extract(epoch FROM created_at) * 1000)::bigint, erased_at FROM users WHERE uid = $1";

const MEMBERSHIPS: &str = "
    SELECT m.gid, g.name, m.role, (extract(epoch FROM m.joined_at) * 1000)::bigint,
           m.last_ack_msgid, m.last_read_msgid
    FROM group_members m JOIN groups g ON g.gid = m.gid
    WHERE m.uid = $1
    ORDER BY m.gid";

const OWN_FRIEND_ROWS: &str = "
    SELECT friend_uid, active FROM friends WHERE uid = $1 ORDER BY friend_uid";

const REQUESTS: &str = "
    SELECT from_uid, to_uid, ts FROM friend_requests
    WHERE from_uid = $1 OR to_uid = $1
    ORDER BY ts, from_uid, to_uid";

const MESSAGES_OF_SENDER: &str = "
    SELECT msgid, sender_uid, cmid, ts, body, tombstone, gid FROM group_msgs
    WHERE sender_uid = $1 AND (gid, msgid) > ($2, $3)
    ORDER BY gid, msgid
    LIMIT $4";

const ERASE_BEGIN: &str = "SELECT friends, requests, effects::text[] FROM herald_erase_begin($1)";

const ERASE_MESSAGES: &str =
    "SELECT erased, last_gid, last_msgid FROM herald_erase_messages($1, $2, $3, $4)";

const ERASE_FINISH: &str = "SELECT conversations, effects::text[] FROM herald_erase_finish($1)";

impl Store {
    /// Everything stored about a user but their messages; refused for a user never created.
    pub async fn user_record(&self, uid: u64) -> Result<UserRecord, StoreError> {
        let _t = timed("user_record");
        let client = self.client().await?;
        let profile_sql = profile_query();
        let (profile, created, memberships, friends, requests) = futures_util::try_join!(
            client.prepare_cached(&profile_sql),
            client.prepare_cached(USER_CREATED),
            client.prepare_cached(MEMBERSHIPS),
            client.prepare_cached(OWN_FRIEND_ROWS),
            client.prepare_cached(REQUESTS),
        )?;
        let by_uid: [Param; 1] = [&db(uid)];
        let Some(profile) = client.query_opt(&profile, &by_uid).await? else {
            return Err(StoreError::Refused(Refusal::UserMissing { uid }));
        };
        let (created, memberships, friends, requests) = futures_util::try_join!(
            client.query_one(&created, &by_uid),
            client.query(&memberships, &by_uid),
            client.query(&friends, &by_uid),
            client.query(&requests, &by_uid),
        )?;
        let groups = memberships
            .iter()
            .map(|r| {
                let role: &str = r.get(2);
                Ok(ExportedMembership {
                    gid: id(r.get(0)),
                    name: r.get(1),
                    role: Role::parse(role).ok_or_else(|| {
                        StoreError::Corrupt(format!("member {uid} has the role {role}"))
                    })?,
                    joined_at: r.get(3),
                    last_ack: id(r.get(4)),
                    last_read: id(r.get(5)),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(UserRecord {
            profile: ExportedProfile {
                info: user_info(&profile, 0),
                created_at: created.get(0),
                erased_at: created.get(1),
            },
            groups,
            friends: friends
                .iter()
                .map(|r| ExportedFriend {
                    uid: id(r.get(0)),
                    active: r.get(1),
                })
                .collect(),
            friend_requests: requests
                .iter()
                .map(|r| ExportedRequest {
                    from: id(r.get(0)),
                    to: id(r.get(1)),
                    ts: r.get(2),
                })
                .collect(),
            conversations: self.conversations(uid).await?,
        })
    }

    /// Up to `limit` of the messages `uid` sent, in (gid, msgid) order after `after`
    /// (`(0, 0)` for the first batch); bodies as stored, tombstones as such.
    pub async fn messages_of_sender(
        &self,
        uid: u64,
        after: MessageKey,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        let _place = self.read_permit().await;
        let _t = timed("messages_of_sender");
        let client = self.client().await?;
        let stmt = client.prepare_cached(MESSAGES_OF_SENDER).await?;
        let rows = client
            .query(
                &stmt,
                &[&db(uid), &db(after.0), &db(after.1), &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|row| message_view(id(row.get(6)), row))
            .collect()
    }

    /// Erasure, step 1: deactivates the user (every group left and told, friendships
    /// ended, requests dropped). Returns the counts it ended and the effects to publish.
    pub async fn erase_begin(&self, uid: u64) -> Result<(ErasureCounts, Vec<Effect>), StoreError> {
        let rows = self.change("erase_begin", ERASE_BEGIN, &[&db(uid)]).await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("herald_erase_begin returned no row".into()))?;
        let effects = super::directory::effects(row.get::<_, Vec<String>>(2))?;
        let counts = ErasureCounts {
            groups_left: effects
                .iter()
                .filter(|e| matches!(e, Effect::Left { .. }))
                .count() as u64,
            friends_removed: id(row.get(0)),
            requests_removed: id(row.get(1)),
            ..ErasureCounts::default()
        };
        Ok((counts, effects))
    }

    /// Erasure, step 2: every message the user sent becomes an `erased` tombstone, `batch`
    /// at a time, each batch its own transaction. Passes run until one erases nothing, so a
    /// message committed behind a pass (a send that was in flight as the user left) is
    /// caught by the next. Returns how many were erased.
    pub async fn erase_messages(&self, uid: u64, batch: u32) -> Result<u64, StoreError> {
        let batch = i32::try_from(batch).unwrap_or(i32::MAX);
        let mut total = 0;
        loop {
            let mut erased_in_pass = 0;
            let mut after: MessageKey = (0, 0);
            loop {
                let params: [Param; 4] = [&db(uid), &db(after.0), &db(after.1), &batch];
                let rows = self
                    .change("erase_messages", ERASE_MESSAGES, &params)
                    .await?;
                let row = rows.first().ok_or_else(|| {
                    StoreError::Corrupt("herald_erase_messages returned no row".into())
                })?;
                erased_in_pass += id(row.get(0));
                match (row.get::<_, Option<i64>>(1), row.get::<_, Option<i64>>(2)) {
                    (Some(gid), Some(msgid)) => after = (id(gid), id(msgid)),
                    _ => break,
                }
            }
            total += erased_in_pass;
            if erased_in_pass == 0 {
                return Ok(total);
            }
        }
    }

    /// Erasure, step 3: the user's own rows deleted, their profile blanked, the user marked
    /// erased. Returns the conversations deleted and the effects (profile notices).
    pub async fn erase_finish(&self, uid: u64) -> Result<(u64, Vec<Effect>), StoreError> {
        let rows = self
            .change("erase_finish", ERASE_FINISH, &[&db(uid)])
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("herald_erase_finish returned no row".into()))?;
        Ok((
            id(row.get(0)),
            super::directory::effects(row.get::<_, Vec<String>>(1))?,
        ))
    }
}
