//! Conversations (seed 001): one row per (uid, channel_id, channel_type), kept unique by a
//! constraint rather than by a look-up before the insert.

use super::{db, id, timed, Store, StoreError};

/// A conversation in a user's list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Conversation {
    pub id: u64,
    pub channel_id: String,
    pub channel_type: u8,
    pub created_at: i64,
    /// The group of a group channel.
    pub gid: Option<u64>,
}

const INSERT_CONVERSATION: &str = "
    INSERT INTO conversations (uid, channel_id, channel_type, created_at, gid)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (uid, channel_id, channel_type) DO NOTHING
    RETURNING id, created_at";

const FIND_CONVERSATION: &str = "
    SELECT id, created_at FROM conversations
    WHERE uid = $1 AND channel_id = $2 AND channel_type = $3";

const CONVERSATIONS: &str = "
    SELECT id, channel_id, channel_type, created_at, gid FROM conversations
    WHERE uid = $1 ORDER BY id";

impl Store {
    /// The user's conversation on a channel, created if it does not exist; `true` when it
    /// was created by this call.
    pub async fn open_conversation(
        &self,
        uid: u64,
        channel_id: &str,
        channel_type: u8,
        gid: Option<u64>,
        now_ms: i64,
    ) -> Result<(Conversation, bool), StoreError> {
        let _t = timed("open_conversation");
        let client = self.client().await?;
        let (insert, find) = futures_util::try_join!(
            client.prepare_cached(INSERT_CONVERSATION),
            client.prepare_cached(FIND_CONVERSATION)
        )?;
        let kind = i16::from(channel_type);
        let inserted = client
            .query_opt(
                &insert,
                &[&db(uid), &channel_id, &kind, &now_ms, &gid.map(db)],
            )
            .await?;
        // ON CONFLICT waited for a concurrent creator to commit; its row is visible to this
        // next statement.
        let (row, created) = match inserted {
            Some(row) => (row, true),
            None => (
                client
                    .query_one(&find, &[&db(uid), &channel_id, &kind])
                    .await?,
                false,
            ),
        };
        let conversation = Conversation {
            id: id(row.get(0)),
            channel_id: channel_id.to_owned(),
            channel_type,
            created_at: row.get(1),
            gid,
        };
        Ok((conversation, created))
    }

    /// The user's conversations, oldest first.
    pub async fn conversations(&self, uid: u64) -> Result<Vec<Conversation>, StoreError> {
        let _t = timed("conversations");
        let client = self.client().await?;
        let stmt = client.prepare_cached(CONVERSATIONS).await?;
        Ok(client
            .query(&stmt, &[&db(uid)])
            .await?
            .iter()
            .map(|row| Conversation {
                id: id(row.get(0)),
                channel_id: row.get(1),
                channel_type: row.get::<_, i16>(2) as u8,
                created_at: row.get(3),
                gid: row.get::<_, Option<i64>>(4).map(id),
            })
            .collect())
    }
}
