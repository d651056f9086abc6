//! Storage: every SQL statement Herald runs, over a pool of PostgreSQL connections.
//!
//! Statements are named constants run through `prepare_cached`; rows are mapped to types
//! in one place each. Nothing above this module sees SQL or `tokio_postgres` types.

mod conversations;
mod directory;
mod migrate;
mod retention;
mod sync;
mod user_data;
mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::error::{ApiError, ErrorCode};
use crate::metrics;
use crate::model::refusal::Refusal;
use crate::model::{GroupCursor, Mark, Marks, MessageView, Tombstone};

pub use conversations::Conversation;
pub use directory::{FriendRequest, Friends, NewGroup, UserUpsert};
pub use migrate::{SqlFile, FUNCTIONS, MIGRATIONS};
pub use retention::{ExpiredPartition, GroupRetention, PruneCut, PrunerTurn};
pub use user_data::{ErasureCounts, MessageKey, UserRecord};
pub use webhooks::{OutboxEvent, WebhookBacklog, WebhookRecord};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL cannot be reached or is shutting down: retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The request names what does not exist, or asks what is not allowed.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// Text PostgreSQL cannot store.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Storage returned something Herald did not write: a bug or a foreign change.
    #[error("unexpected data: {0}")]
    Corrupt(String),
    #[error("query failed: {0}")]
    Query(#[source] tokio_postgres::Error),
    /// An applied migration's file is not the one applied: only the file restored, or the
    /// binary that holds it, can start on this database.
    #[error(
        "migration {version} changed since it was applied (checksum {applied}, file \
         sql/migrations/{version}.sql now {file}): applied migrations are append-only; \
         restore the file and put the change in a new migration"
    )]
    MigrationChanged {
        version: &'static str,
        applied: String,
        file: String,
    },
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => ApiError::unavailable(),
            StoreError::Refused(refusal) => refusal.into(),
            StoreError::Invalid(why) => ApiError::bad_request(why),
            StoreError::Corrupt(what) => {
                tracing::error!(%what, "storage returned unexpected data");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
            StoreError::Query(e) => {
                // tokio-postgres's Display says only "db error"; the server's words are in
                // its DbError.
                match e.as_db_error() {
                    Some(db) => {
                        tracing::error!(code = db.code().code(), error = %db, "storage query failed")
                    }
                    None => tracing::error!(error = %e, "storage query failed"),
                }
                ApiError::new(ErrorCode::Internal, "internal error")
            }
            // Only start-up migrates: no request meets this.
            error @ StoreError::MigrationChanged { .. } => {
                tracing::error!(%error, "storage refused to start");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

/// The error code of each of Herald's own SQLSTATEs, those of refusals (`herald_refuse`).
fn refusal_code(sqlstate: &str) -> Option<ErrorCode> {
    match sqlstate {
        "HR400" => Some(ErrorCode::BadRequest),
        "HR403" => Some(ErrorCode::Forbidden),
        "HR404" => Some(ErrorCode::NotFound),
        "HR409" => Some(ErrorCode::Conflict),
        _ => None,
    }
}

/// Reads a refusal raised by `herald_refuse`: its key (the MESSAGE) and its data (the
/// DETAIL, a JSON object). One Herald does not know, or raised under another code than its
/// own, is a bug between the SQL and this binary.
fn decode_refusal(code: ErrorCode, key: &str, detail: Option<&str>) -> StoreError {
    let unknown = |why: String| {
        StoreError::Corrupt(format!(
            "refusal {key} raised as {} with detail {detail:?}: {why}",
            code.as_str()
        ))
    };
    let mut data = match detail.map(serde_json::from_str) {
        Some(Ok(serde_json::Value::Object(data))) => data,
        _ => return unknown("the detail is not a JSON object".to_owned()),
    };
    data.insert("refusal".to_owned(), key.into());
    match serde_json::from_value::<Refusal>(data.into()) {
        Ok(refusal) if refusal.code() == code => StoreError::Refused(refusal),
        Ok(refusal) => unknown(format!("it is {}", refusal.code().as_str())),
        Err(e) => unknown(e.to_string()),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            if let Some(code) = refusal_code(db.code().code()) {
                return decode_refusal(code, db.message(), db.detail());
            }
        }
        // Text PostgreSQL cannot store: the input's fault (the edge refuses what it knows of).
        if let Some(code) = err.code() {
            if [
                SqlState::CHARACTER_NOT_IN_REPERTOIRE,
                SqlState::UNTRANSLATABLE_CHARACTER,
            ]
            .contains(code)
            {
                return StoreError::Invalid(err.to_string());
            }
        }
        let unreachable = match err.code() {
            None => true,
            Some(code) => [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::CONNECTION_FAILURE,
                SqlState::CONNECTION_EXCEPTION,
                SqlState::CONNECTION_DOES_NOT_EXIST,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
            ]
            .contains(code),
        };
        if unreachable {
            StoreError::Unavailable(err.to_string())
        } else {
            StoreError::Query(err)
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// One message to append to a group.
#[derive(Debug)]
pub struct NewMessage {
    pub sender: u64,
    pub cmid: String,
    pub body: Box<RawValue>,
    pub ts: i64,
}

/// What became of one appended message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub msgid: u64,
    pub ts: i64,
    /// The (sender, cmid) was stored before; `msgid` and `ts` are the original's.
    pub dup: bool,
}

/// The result of one group-commit transaction.
#[derive(Debug)]
pub struct AppendOutcome {
    /// One entry per input message, in input order.
    pub results: Vec<Appended>,
    /// The group's newest msgid after the commit.
    pub latest: u64,
}

/// A group as its actor needs it: the newest msgid, the version of its member list (its
/// newest event) and every member's watermark.
#[derive(Debug)]
pub struct GroupSnapshot {
    pub latest: u64,
    pub version: u64,
    pub members: Vec<(u64, Marks)>,
}

/// Where a group stands: its newest msgid and its newest event's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPosition {
    pub gid: u64,
    pub latest: u64,
    pub version: u64,
}

/// One member's new watermark: received (ack) or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AckUpdate {
    pub mark: Mark,
    pub gid: u64,
    pub uid: u64,
    pub msgid: u64,
}

/// A page of a group's messages.
#[derive(Debug)]
pub struct Page {
    pub msgs: Vec<MessageView>,
    pub more: bool,
    /// The group's first retained msgid, when retention pruned messages the page asked for
    /// (those above `after`): the page starts there.
    pub first: Option<u64>,
}

impl Page {
    /// The page of the messages above `after`, read with the group's newest msgid in one
    /// snapshot. msgids are dense and committed in order, so a page whose head is above
    /// `after + 1`, or an empty one while `after` is below the newest, shows where
    /// retention cut.
    fn pruned_below(msgs: Vec<MessageView>, more: bool, after: u64, latest: u64) -> Page {
        let first = match msgs.first() {
            Some(head) => (head.msgid > after + 1).then_some(head.msgid),
            None => (after < latest).then_some(latest + 1),
        };
        Page { msgs, more, first }
    }
}

/// Whether a user may use a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    NoSuchGroup,
    NotMember,
    Member,
}

const USER_ACTIVE: &str = "SELECT active FROM users WHERE uid = $1";

const MEMBERSHIP: &str = "
    SELECT m.uid FROM groups g
    LEFT JOIN group_members m ON m.gid = g.gid AND m.uid = $2
    WHERE g.gid = $1 AND NOT g.disbanded";

const GROUP_SNAPSHOT: &str = "
    SELECT g.last_msgid, coalesce(v.user_list_version, 0), m.uid, m.last_ack_msgid,
           m.last_read_msgid
    FROM groups g
    LEFT JOIN group_versions v ON v.gid = g.gid
    LEFT JOIN group_members m ON m.gid = g.gid
    WHERE g.gid = $1 AND NOT g.disbanded";

const GROUP_LATEST: &str = "SELECT last_msgid FROM groups WHERE gid = $1";

const GROUP_POSITIONS: &str = "
    SELECT g.gid, g.last_msgid, coalesce(v.user_list_version, 0)
    FROM groups g LEFT JOIN group_versions v ON v.gid = g.gid
    WHERE g.gid = ANY($1)";

const USER_GROUPS: &str = "
    SELECT m.gid, m.last_ack_msgid, m.last_read_msgid, g.last_msgid FROM group_members m
    JOIN groups g ON g.gid = m.gid
    WHERE m.uid = $1
    ORDER BY m.gid";

/// Group commit: see `sql/functions/append.sql`.
const APPEND: &str =
    "SELECT ord, msgid, ts, dup, latest FROM herald_append($1, $2, $3, $4, $5, $6)";

/// The page and the group's newest msgid in one statement, so in one snapshot (no row for a
/// group that does not exist; one row of NULLs after the newest for an empty page).
const MESSAGES_AFTER: &str = "
    SELECT m.msgid, m.sender_uid, m.cmid, m.ts, m.body, m.tombstone, g.last_msgid,
           g.disbanded, r.uid IS NOT NULL
    FROM groups g
    LEFT JOIN group_members r ON r.gid = g.gid AND r.uid = $4
    LEFT JOIN LATERAL (
        SELECT msgid, sender_uid, cmid, ts, body, tombstone FROM group_msgs
        WHERE gid = $1 AND msgid > $2
        ORDER BY msgid
        LIMIT $3
    ) m ON r.uid IS NOT NULL AND NOT g.disbanded
    WHERE g.gid = $1";

const MESSAGES_BETWEEN: &str = "
    SELECT msgid, sender_uid, cmid, ts, body, tombstone FROM group_msgs
    WHERE gid = $1 AND msgid > $2 AND msgid < $3
    ORDER BY msgid";

/// Watermarks only move forward, whatever order flushes land in.
const FLUSH_ACKS: &str = "
    UPDATE group_members AS m SET last_ack_msgid = a.msgid
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS a (gid, uid, msgid)
    WHERE m.gid = a.gid AND m.uid = a.uid AND m.last_ack_msgid < a.msgid";

/// Read positions only move forward too.
const FLUSH_READS: &str = "
    UPDATE group_members AS m SET last_read_msgid = a.msgid
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS a (gid, uid, msgid)
    WHERE m.gid = a.gid AND m.uid = a.uid AND m.last_read_msgid < a.msgid";

/// One statement parameter.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// PostgreSQL's bigint is signed; every id Herald stores is below 2^53.
fn db(id: u64) -> i64 {
    id as i64
}

fn id(value: i64) -> u64 {
    value as u64
}

/// The store: a connection pool and the operations over it.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// One connection of its own for readiness probes, so a pool busy with client work
    /// never makes the node look unable to serve.
    probe: Pool,
    /// One connection of its own for the pruner and the partitions: it holds the pruner's
    /// session lock while it runs, and never takes a connection sends need.
    maintenance: Pool,
    /// Client reads (pulls, syncs) hold one of these while they run: they never take more
    /// than half the pool, so group commits and ack writes always find a connection.
    client_reads: Arc<Semaphore>,
}

/// Records an operation's latency when dropped.
struct Timed {
    op: &'static str,
    start: Instant,
}

impl Drop for Timed {
    fn drop(&mut self) {
        metrics::global().storage(self.op, self.start.elapsed());
    }
}

fn timed(op: &'static str) -> Timed {
    Timed {
        op,
        start: Instant::now(),
    }
}

impl Store {
    /// A pool over `url`. Connects lazily: start-up may precede PostgreSQL. With
    /// `records_webhooks`, changes committed through it are recorded in the webhook outbox.
    pub fn new(url: &str, size: usize, records_webhooks: bool) -> Result<Store, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Unavailable(e.to_string()))?;
        if records_webhooks {
            // The SQL functions record only on connections that say so (sql/functions/webhooks.sql).
            let options = config.get_options().unwrap_or_default();
            config.options(format!("{options} -c herald.webhooks=on").trim_start());
        }
        let storage_thread =
            OnStorageThread::start().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let pool = |size: usize| {
            let manager = Manager::from_connect(
                config.clone(),
                storage_thread.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(5)))
                .create_timeout(Some(Duration::from_secs(5)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        Ok(Store {
            pool: pool(size)?,
            probe: pool(1)?,
            maintenance: pool(1)?,
            client_reads: Arc::new(Semaphore::new((size / 2).max(1))),
        })
    }

    /// Waits for a place among the client reads running at once (fairly: first come, first
    /// served).
    async fn read_permit(&self) -> OwnedSemaphorePermit {
        let permit = self.client_reads.clone().acquire_owned().await;
        permit.expect("the semaphore is never closed")
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Applies the migrations in `sql/migrations/` not applied yet, then the function files of
    /// `sql/functions/` if any changed; safe with several nodes at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        migrate::apply(&mut client).await
    }

    /// Whether PostgreSQL answers, on the probe's own connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _t = timed("ping");
        self.probe.get().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// `Some(active)` for a user that exists, `None` for one never created.
    pub async fn user_active(&self, uid: u64) -> Result<Option<bool>, StoreError> {
        let _t = timed("user_active");
        let client = self.client().await?;
        let stmt = client.prepare_cached(USER_ACTIVE).await?;
        Ok(client
            .query_opt(&stmt, &[&db(uid)])
            .await?
            .map(|r| r.get(0)))
    }

    /// Whether `uid` may use group `gid`.
    pub async fn membership(&self, gid: u64, uid: u64) -> Result<Membership, StoreError> {
        let _t = timed("membership");
        let client = self.client().await?;
        let stmt = client.prepare_cached(MEMBERSHIP).await?;
        Ok(
            match client.query_opt(&stmt, &[&db(gid), &db(uid)]).await? {
                None => Membership::NoSuchGroup,
                Some(row) if row.get::<_, Option<i64>>(0).is_none() => Membership::NotMember,
                Some(_) => Membership::Member,
            },
        )
    }

    /// The group's newest msgid and its members' watermarks; `None` if it does not exist.
    pub async fn group_snapshot(&self, gid: u64) -> Result<Option<GroupSnapshot>, StoreError> {
        let _t = timed("group_snapshot");
        let client = self.client().await?;
        let stmt = client.prepare_cached(GROUP_SNAPSHOT).await?;
        let rows = client.query(&stmt, &[&db(gid)]).await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let (latest, version) = (id(first.get(0)), id(first.get(1)));
        let members = rows
            .iter()
            .filter_map(|r| {
                let uid: Option<i64> = r.get(2);
                uid.map(|uid| {
                    let marks = Marks {
                        received: id(r.get(3)),
                        read: id(r.get(4)),
                    };
                    (id(uid), marks)
                })
            })
            .collect();
        Ok(Some(GroupSnapshot {
            latest,
            version,
            members,
        }))
    }

    /// The group's newest committed msgid.
    pub async fn group_latest(&self, gid: u64) -> Result<Option<u64>, StoreError> {
        let _t = timed("group_latest");
        let client = self.client().await?;
        let stmt = client.prepare_cached(GROUP_LATEST).await?;
        Ok(client
            .query_opt(&stmt, &[&db(gid)])
            .await?
            .map(|r| id(r.get(0))))
    }

    /// Where each of these groups (those that exist) stands, in one query.
    pub async fn group_positions(&self, gids: &[u64]) -> Result<Vec<GroupPosition>, StoreError> {
        let _t = timed("group_positions");
        let gids: Vec<i64> = gids.iter().map(|&gid| db(gid)).collect();
        let client = self.client().await?;
        let stmt = client.prepare_cached(GROUP_POSITIONS).await?;
        Ok(client
            .query(&stmt, &[&gids])
            .await?
            .iter()
            .map(|r| GroupPosition {
                gid: id(r.get(0)),
                latest: id(r.get(1)),
                version: id(r.get(2)),
            })
            .collect())
    }

    /// Every group of a user with its stored watermark and newest msgid.
    pub async fn user_groups(&self, uid: u64) -> Result<Vec<GroupCursor>, StoreError> {
        let _t = timed("user_groups");
        let client = self.client().await?;
        let stmt = client.prepare_cached(USER_GROUPS).await?;
        Ok(client
            .query(&stmt, &[&db(uid)])
            .await?
            .iter()
            .map(|r| GroupCursor {
                gid: id(r.get(0)),
                last_ack: id(r.get(1)),
                last_read: id(r.get(2)),
                latest: id(r.get(3)),
            })
            .collect())
    }

    /// Appends a batch of messages to a group in one transaction and one round trip (group
    /// commit; the logic is `herald_append` in `sql/`).
    ///
    /// Resends of a (sender, cmid) stored before, or repeated inside the batch, are not
    /// stored again: they come back `dup` with the original msgid. `offline`, the members
    /// with no session online (if known), goes to the webhook outbox with the messages.
    pub async fn append(
        &self,
        gid: u64,
        batch: &[NewMessage],
        offline: Option<&[u64]>,
    ) -> Result<AppendOutcome, StoreError> {
        let _t = timed("append");
        let senders: Vec<i64> = batch.iter().map(|m| db(m.sender)).collect();
        let cmids: Vec<&str> = batch.iter().map(|m| m.cmid.as_str()).collect();
        let stamps: Vec<i64> = batch.iter().map(|m| m.ts).collect();
        let bodies: Vec<&str> = batch.iter().map(|m| m.body.get()).collect();
        let offline: Option<Vec<i64>> = offline.map(|uids| uids.iter().copied().map(db).collect());
        let client = self.client().await?;
        let stmt = client.prepare_cached(APPEND).await?;
        let rows = client
            .query(
                &stmt,
                &[&db(gid), &senders, &cmids, &stamps, &bodies, &offline],
            )
            .await?;
        let latest = rows.first().map_or(0, |r| id(r.get(4)));
        let results = rows
            .iter()
            .map(|r| Appended {
                msgid: id(r.get(1)),
                ts: r.get(2),
                dup: r.get(3),
            })
            .collect();
        Ok(AppendOutcome { results, latest })
    }

    /// Up to `limit` messages with msgid above `after`, ascending, and where retention cut
    /// if it pruned some of them — if `reader` may read the group, which is checked in the
    /// same statement: a pull costs one round trip (a reconnect storm is thousands of them).
    pub async fn messages_after(
        &self,
        gid: u64,
        reader: u64,
        after: u64,
        limit: u32,
    ) -> Result<(Membership, Page), StoreError> {
        let after = after.min(crate::model::MAX_ID);
        let _place = self.read_permit().await;
        let _t = timed("messages_after");
        let client = self.client().await?;
        let stmt = client.prepare_cached(MESSAGES_AFTER).await?;
        let rows = client
            .query(
                &stmt,
                &[&db(gid), &db(after), &(i64::from(limit) + 1), &db(reader)],
            )
            .await?;
        let membership = match rows.first() {
            None => Membership::NoSuchGroup,
            Some(row) if row.get::<_, bool>(7) => Membership::NoSuchGroup,
            Some(row) if !row.get::<_, bool>(8) => Membership::NotMember,
            Some(_) => Membership::Member,
        };
        let latest = rows.first().map_or(0, |row| id(row.get(6)));
        let stored = |row: &&tokio_postgres::Row| row.get::<_, Option<i64>>(0).is_some();
        let more = rows.iter().filter(stored).count() > limit as usize;
        let msgs = rows
            .iter()
            .filter(stored)
            .take(limit as usize)
            .map(|row| message_view(gid, row))
            .collect::<Result<_, _>>()?;
        Ok((membership, Page::pruned_below(msgs, more, after, latest)))
    }

    /// Every message strictly between two msgids, ascending.
    pub async fn messages_between(
        &self,
        gid: u64,
        after: u64,
        before: u64,
    ) -> Result<Vec<MessageView>, StoreError> {
        let _t = timed("messages_between");
        let client = self.client().await?;
        let stmt = client.prepare_cached(MESSAGES_BETWEEN).await?;
        client
            .query(&stmt, &[&db(gid), &db(after), &db(before)])
            .await?
            .iter()
            .map(|row| message_view(gid, row))
            .collect()
    }

    /// Writes a batch of watermarks in one statement per mark; returns the rows moved
    /// forward. The batch is sorted so concurrent flushes lock rows in one order.
    pub async fn flush_acks(&self, acks: &mut [AckUpdate]) -> Result<u64, StoreError> {
        let _t = timed("flush_acks");
        acks.sort_unstable();
        let reads_from = acks.partition_point(|a| a.mark == Mark::Received);
        let (received, read) = acks.split_at(reads_from);
        let client = self.client().await?;
        let mut moved = 0;
        for (statement, batch) in [(FLUSH_ACKS, received), (FLUSH_READS, read)] {
            if batch.is_empty() {
                continue;
            }
            let gids: Vec<i64> = batch.iter().map(|a| db(a.gid)).collect();
            let uids: Vec<i64> = batch.iter().map(|a| db(a.uid)).collect();
            let msgids: Vec<i64> = batch.iter().map(|a| db(a.msgid)).collect();
            let stmt = client.prepare_cached(statement).await?;
            moved += client.execute(&stmt, &[&gids, &uids, &msgids]).await?;
        }
        Ok(moved)
    }
}

/// Opens connections on a thread of their own: a connection's socket and I/O task live on
/// the runtime that opened it, and the HTTP workers and group threads are busy with sessions,
/// where replies from PostgreSQL would wait their turn behind fan-out.
#[derive(Clone)]
struct OnStorageThread {
    runtime: tokio::runtime::Handle,
}

impl OnStorageThread {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("storage-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        Ok(OnStorageThread { runtime: handle })
    }
}

impl deadpool_postgres::Connect for OnStorageThread {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let (config, runtime) = (config.clone(), self.runtime.clone());
        Box::pin(async move {
            let (client, connection) = runtime
                .spawn(async move { config.connect(NoTls).await })
                .await
                .expect("the storage thread runs as long as the process")?;
            let task = runtime.spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "PostgreSQL connection ended");
                }
            });
            Ok((client, task))
        })
    }
}

/// Reads a message from its columns `msgid, sender_uid, cmid, ts, body, tombstone`.
fn message_view(gid: u64, row: &tokio_postgres::Row) -> Result<MessageView, StoreError> {
    let msgid = id(row.get(0));
    let tombstone = match row.get::<_, Option<&str>>(5) {
        None => None,
        Some(stored) => Some(Tombstone::parse(stored).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "message {msgid} of group {gid}: tombstone {stored}"
            ))
        })?),
    };
    let body = match tombstone {
        Some(_) => None,
        // Bodies were checked to be JSON before they were stored.
        None => Some(RawValue::from_string(row.get(4)).map_err(|e| {
            StoreError::Corrupt(format!("message {msgid} of group {gid}: body {e}"))
        })?),
    };
    Ok(MessageView {
        gid,
        msgid,
        from: id(row.get(1)),
        cmid: row.get(2),
        ts: row.get(3),
        body,
        tombstone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::refusal::GroupAction;
    use crate::model::Role;

    fn refused(sqlstate: &str, key: &str, detail: &str) -> Result<Refusal, String> {
        let code = refusal_code(sqlstate).expect("one of Herald's SQLSTATEs");
        match decode_refusal(code, key, Some(detail)) {
            StoreError::Refused(refusal) => Ok(refusal),
            other => Err(other.to_string()),
        }
    }

    /// Raises exactly as `sql/functions/` make them (`herald_refuse`).
    #[test]
    fn refusals_decode_from_their_key_and_detail() {
        assert_eq!(
            refused("HR404", "group_missing", r#"{"gid": 7}"#),
            Ok(Refusal::GroupMissing { gid: 7 })
        );
        assert_eq!(
            refused("HR400", "self_friendship", "{}"),
            Ok(Refusal::SelfFriendship)
        );
        assert_eq!(
            refused(
                "HR403",
                "role_required",
                r#"{"gid": 7, "roles": ["owner", "admin"], "action": "remove_member", "uid": 4, "role": null}"#
            ),
            Ok(Refusal::RoleRequired {
                gid: 7,
                roles: vec![Role::Owner, Role::Admin],
                action: GroupAction::RemoveMember { uid: 4, role: None },
            })
        );
        assert_eq!(
            refused(
                "HR403",
                "role_required",
                r#"{"gid": 7, "roles": ["owner"], "action": "disband"}"#
            )
            .map(|refusal| refusal.to_string()),
            Ok("only the owner of group 7 may disband it".to_owned())
        );
    }

    /// The `first` of a page holding `msgids`.
    fn page_of(msgids: &[u64], after: u64, latest: u64) -> Option<u64> {
        let msgs = msgids
            .iter()
            .map(|&msgid| MessageView {
                gid: 7,
                msgid,
                from: 1,
                cmid: format!("c-{msgid}"),
                ts: 0,
                body: Some(RawValue::from_string("{}".to_owned()).unwrap()),
                tombstone: None,
            })
            .collect();
        Page::pruned_below(msgs, false, after, latest).first
    }

    #[test]
    fn a_page_says_where_retention_cut_only_when_it_cut_above_after() {
        let kept = [8, 9, 10, 11, 12];
        assert_eq!(page_of(&kept, 0, 12), Some(8));
        assert_eq!(page_of(&kept, 6, 12), Some(8), "first - 2");
        assert_eq!(page_of(&kept, 7, 12), None, "first - 1");
        assert_eq!(page_of(&kept[2..], 9, 12), None, "inside");
        assert_eq!(page_of(&[], 12, 12), None, "at the latest");
        assert_eq!(page_of(&[], 20, 12), None, "past the latest");
        // Everything pruned: history starts again after the latest.
        assert_eq!(page_of(&[], 3, 12), Some(13));
        assert_eq!(page_of(&[1, 2, 3], 0, 3), None, "nothing pruned");
    }

    #[test]
    fn a_raise_herald_does_not_know_is_an_internal_error() {
        for (sqlstate, key, detail) in [
            ("HR404", "group_vanished", r#"{"gid": 7}"#),
            ("HR404", "group_missing", r#"{"uid": 7}"#),
            ("HR404", "group_missing", "7"),
            ("HR404", "group_missing", "group 7 does not exist"),
            ("HR403", "group_missing", r#"{"gid": 7}"#),
            (
                "HR403",
                "role_required",
                r#"{"gid": 7, "roles": ["owner"], "action": "dance"}"#,
            ),
        ] {
            let error = refused(sqlstate, key, detail).expect_err(detail);
            assert!(error.starts_with("unexpected data: refusal"), "{error}");
        }
        let code = refusal_code("HR404").unwrap();
        assert!(matches!(
            decode_refusal(code, "group_missing", None),
            StoreError::Corrupt(_)
        ));
        assert_eq!(refusal_code("P0001"), None);
    }
}
