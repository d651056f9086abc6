//! Retention (`sql/functions/retention.sql`): the partitions of `group_msgs`, made ahead and
//! dropped whole, and the prefixes of groups pruned row by row. The pruner runs on the
//! store's maintenance connection, holding a session advisory lock so that one node of a
//! cluster prunes at a time.

use std::time::Duration;

use super::{db, id, timed, Store, StoreError};

/// A group's own retention limits (`None`: the deployment's) and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRetention {
    pub gid: u64,
    pub max_age_s: Option<u64>,
    pub max_messages: Option<u64>,
    /// The oldest msgid still stored; `None` when the group holds no message.
    pub first: Option<u64>,
    pub latest: u64,
}

/// A group to prune, and the msgid to prune it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneCut {
    pub gid: u64,
    pub through: u64,
}

/// A partition past the deployment's age limit, or one a pruner cut off mid-way left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredPartition {
    pub name: String,
    pub step: DropStep,
}

/// What dropping a partition still takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropStep {
    /// Attached: detach it, then drop it.
    Detach,
    /// Its detach was begun: finalize it, then drop it.
    Finalize,
    /// No longer attached (or no longer there): drop it and forget it.
    Drop,
}

/// The session advisory lock naming the pruner's turn ("HRLDPRUN").
const PRUNER_LOCK: i64 = 0x4852_4c44_5052_554e;

const TRY_TURN: &str = "SELECT pg_try_advisory_lock($1)";
const END_TURN: &str = "SELECT pg_advisory_unlock($1)";
const ENSURE_PARTITIONS: &str = "SELECT herald_ensure_partitions($1, $2)";
const EXPIRED_PARTITIONS: &str = "SELECT name, step FROM herald_expired_partitions($1)";
const FORGET_PARTITION: &str = "SELECT herald_forget_partition($1)";
const PRUNE_PLAN: &str = "SELECT gid, through_msgid FROM herald_prune_plan($1, $2)";
const PRUNE_BATCH: &str = "SELECT herald_prune_batch($1, $2, $3)";
const PRUNED: &str = "SELECT herald_pruned($1, $2)";
const GROUP_RETENTION: &str =
    "SELECT gid, max_age_s, max_messages, first_msgid, latest FROM herald_group_retention($1)";
const SET_GROUP_RETENTION: &str = "SELECT gid, max_age_s, max_messages, first_msgid, latest
    FROM herald_set_group_retention($1, $2, $3)";

fn millis(span: Duration) -> i64 {
    i64::try_from(span.as_millis()).unwrap_or(i64::MAX)
}

fn group_retention(row: &tokio_postgres::Row) -> GroupRetention {
    let optional = |at: usize| row.get::<_, Option<i64>>(at).map(id);
    GroupRetention {
        gid: id(row.get(0)),
        max_age_s: optional(1),
        max_messages: optional(2),
        first: optional(3),
        latest: id(row.get(4)),
    }
}

impl Store {
    /// Makes the partitions of `group_msgs` missing up to `ahead` past now, each `width`
    /// wide; returns how many it made. Safe with several nodes at once.
    pub async fn ensure_partitions(
        &self,
        width: Duration,
        ahead: Duration,
    ) -> Result<u32, StoreError> {
        let _t = timed("ensure_partitions");
        let client = self.maintenance.get().await?;
        let stmt = client.prepare_cached(ENSURE_PARTITIONS).await?;
        let row = client
            .query_one(&stmt, &[&millis(width), &millis(ahead)])
            .await?;
        Ok(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0))
    }

    /// The pruner's turn, if no other node has it: the maintenance connection, holding the
    /// cluster-wide lock until [`PrunerTurn::end`].
    pub async fn pruner_turn(&self) -> Result<Option<PrunerTurn>, StoreError> {
        let client = self.maintenance.get().await?;
        let stmt = client.prepare_cached(TRY_TURN).await?;
        let taken: bool = client.query_one(&stmt, &[&PRUNER_LOCK]).await?.get(0);
        Ok(taken.then_some(PrunerTurn { client }))
    }

    /// A group's own retention limits and what it holds.
    pub async fn group_retention(&self, gid: u64) -> Result<GroupRetention, StoreError> {
        let _t = timed("group_retention");
        let client = self.client().await?;
        let stmt = client.prepare_cached(GROUP_RETENTION).await?;
        let row = client.query_one(&stmt, &[&db(gid)]).await?;
        Ok(group_retention(&row))
    }

    /// Sets a group's own retention limits (`None`: the deployment's).
    pub async fn set_group_retention(
        &self,
        gid: u64,
        max_age_s: Option<u64>,
        max_messages: Option<u64>,
    ) -> Result<GroupRetention, StoreError> {
        let _t = timed("set_group_retention");
        let client = self.client().await?;
        let stmt = client.prepare_cached(SET_GROUP_RETENTION).await?;
        let row = client
            .query_one(
                &stmt,
                &[&db(gid), &max_age_s.map(db), &max_messages.map(db)],
            )
            .await?;
        Ok(group_retention(&row))
    }
}

/// The pruner's turn: the maintenance connection with the pruner's lock held. Every call is
/// its own short transaction.
pub struct PrunerTurn {
    client: deadpool_postgres::Client,
}

impl PrunerTurn {
    /// The partitions whose every row is older than `max_age`, oldest first.
    pub async fn expired_partitions(
        &self,
        max_age: Duration,
    ) -> Result<Vec<ExpiredPartition>, StoreError> {
        let stmt = self.client.prepare_cached(EXPIRED_PARTITIONS).await?;
        self.client
            .query(&stmt, &[&millis(max_age)])
            .await?
            .iter()
            .map(|row| {
                let step = match row.get::<_, &str>(1) {
                    "detach" => Ok(DropStep::Detach),
                    "finalize" => Ok(DropStep::Finalize),
                    "drop" => Ok(DropStep::Drop),
                    other => Err(StoreError::Corrupt(format!("partition step {other}"))),
                };
                Ok(ExpiredPartition {
                    name: row.get(0),
                    step: step?,
                })
            })
            .collect()
    }

    /// Detaches a partition without blocking sends (`DETACH ... CONCURRENTLY`, which runs
    /// outside any transaction: a plain statement on this connection), then drops it.
    pub async fn drop_partition(&self, partition: &ExpiredPartition) -> Result<(), StoreError> {
        let _t = timed("drop_partition");
        let name = quoted(&partition.name);
        let detach = match partition.step {
            DropStep::Detach => Some("CONCURRENTLY"),
            DropStep::Finalize => Some("FINALIZE"),
            DropStep::Drop => None,
        };
        if let Some(finish) = detach {
            self.client
                .batch_execute(&format!(
                    "ALTER TABLE group_msgs DETACH PARTITION {name} {finish}"
                ))
                .await?;
        }
        let stmt = self.client.prepare_cached(FORGET_PARTITION).await?;
        self.client.execute(&stmt, &[&partition.name]).await?;
        Ok(())
    }

    /// The groups to prune row by row: for count limits and for their own age limits.
    pub async fn prune_plan(
        &self,
        max_age: Duration,
        max_messages: u64,
    ) -> Result<Vec<PruneCut>, StoreError> {
        let _t = timed("prune_plan");
        let max_age_s = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        let stmt = self.client.prepare_cached(PRUNE_PLAN).await?;
        Ok(self
            .client
            .query(&stmt, &[&max_age_s, &db(max_messages)])
            .await?
            .iter()
            .map(|row| PruneCut {
                gid: id(row.get(0)),
                through: id(row.get(1)),
            })
            .collect())
    }

    /// Deletes up to `batch` of the group's oldest messages at or below the cut; returns how
    /// many went (0: none is left there).
    pub async fn prune_batch(&self, cut: PruneCut, batch: u64) -> Result<u64, StoreError> {
        let _t = timed("prune_batch");
        let stmt = self.client.prepare_cached(PRUNE_BATCH).await?;
        let row = self
            .client
            .query_one(&stmt, &[&db(cut.gid), &db(cut.through), &db(batch)])
            .await?;
        Ok(id(row.get(0)))
    }

    /// Records that the group is pruned through the cut.
    pub async fn pruned(&self, cut: PruneCut) -> Result<(), StoreError> {
        let stmt = self.client.prepare_cached(PRUNED).await?;
        self.client
            .execute(&stmt, &[&db(cut.gid), &db(cut.through)])
            .await?;
        Ok(())
    }

    /// Gives the lock back. A connection that cannot is closed, which gives it back too.
    pub async fn end(self) {
        let unlocked = match self.client.prepare_cached(END_TURN).await {
            Ok(stmt) => self.client.execute(&stmt, &[&PRUNER_LOCK]).await.is_ok(),
            Err(_) => false,
        };
        if !unlocked {
            drop(deadpool_postgres::Object::take(self.client));
        }
    }
}

/// An identifier quoted for SQL (the partition names are Herald's own, but all the same).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
