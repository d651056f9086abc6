//! The pruner: on every node, every `HERALD_RETENTION_INTERVAL_S`, one node of the cluster at
//! a time (the store's pruner lock) makes the message partitions ahead, drops those past the
//! deployment's age limit whole, and deletes the oldest messages of groups over a count
//! limit or their own stricter age limit, a small batch per statement. Every cut is a prefix
//! of the group's msgids, so the msgids kept stay dense; no step takes a groups row lock, so
//! sends never wait for it.

use std::time::{Duration, Instant};

use crate::config::RetentionConfig;
use crate::metrics;
use crate::store::{Store, StoreError};

/// Partitions made ahead of now: this many partition widths or pruner intervals, whichever
/// is longer, so a run that fails or comes late never leaves a send without its partition.
const PARTITIONS_AHEAD: u32 = 3;

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    partitions_created: u32,
    partitions_dropped: u64,
    pruned: u64,
}

/// The deployment's limits and the pruner's pace.
pub struct Pruner {
    store: Store,
    config: RetentionConfig,
}

impl Pruner {
    pub fn new(store: Store, config: RetentionConfig) -> Self {
        Pruner { store, config }
    }

    /// How far ahead of now partitions are made.
    fn ahead(&self) -> Duration {
        (self.config.partition * PARTITIONS_AHEAD).max(self.config.interval * PARTITIONS_AHEAD)
    }

    /// Makes the partitions ahead: at start, before the node serves.
    pub async fn prepare(&self) -> Result<u32, StoreError> {
        let made = self
            .store
            .ensure_partitions(self.config.partition, self.ahead())
            .await?;
        metrics::global()
            .retention
            .partitions_created
            .inc_by(made.into());
        Ok(made)
    }

    /// Runs every interval for the life of the process. A failed run is retried at the
    /// next tick: each step is safe to repeat.
    pub fn start(self) {
        actix_web::rt::spawn(async move {
            let mut ticks = actix_web::rt::time::interval(self.config.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let started = Instant::now();
                let outcome = self.run().await;
                let took = started.elapsed();
                let metrics = &metrics::global().retention;
                match outcome {
                    Ok(None) => continue,
                    Ok(Some(run)) => {
                        metrics.last_run_seconds.set(took.as_secs_f64());
                        if run != Run::default() {
                            tracing::info!(
                                pruned = run.pruned,
                                partitions_dropped = run.partitions_dropped,
                                partitions_created = run.partitions_created,
                                took_ms = took.as_millis() as u64,
                                "retention: pruned"
                            );
                        }
                    }
                    Err(error) => {
                        metrics.errors.inc();
                        tracing::warn!(%error, "retention: the pruner's run failed");
                    }
                }
            }
        });
    }

    /// One run; `None` when another node has the pruner's turn.
    async fn run(&self) -> Result<Option<Run>, StoreError> {
        let partitions_created = self.prepare().await?;
        let Some(turn) = self.store.pruner_turn().await? else {
            return Ok(None);
        };
        let outcome = self.prune(&turn).await;
        turn.end().await;
        let (partitions_dropped, pruned) = outcome?;
        Ok(Some(Run {
            partitions_created,
            partitions_dropped,
            pruned,
        }))
    }

    /// Drops what is past the deployment's age, then prunes the groups over a limit; returns
    /// the partitions dropped and the messages deleted.
    async fn prune(&self, turn: &crate::store::PrunerTurn) -> Result<(u64, u64), StoreError> {
        let metrics = &metrics::global().retention;
        let (max_age, max_messages) = (self.config.max_age, self.config.max_messages);
        let mut dropped = 0;
        // With no age limit, only what a pruner cut off mid-way left behind.
        for partition in turn.expired_partitions(max_age).await? {
            turn.drop_partition(&partition).await?;
            tracing::info!(partition = partition.name, "retention: partition dropped");
            metrics.partitions_dropped.inc();
            dropped += 1;
        }
        let mut pruned = 0;
        for cut in turn.prune_plan(max_age, max_messages).await? {
            loop {
                let gone = turn.prune_batch(cut, self.config.batch).await?;
                if gone == 0 {
                    break;
                }
                metrics.pruned.inc_by(gone);
                pruned += gone;
            }
            turn.pruned(cut).await?;
            tracing::debug!(
                gid = cut.gid,
                through = cut.through,
                "retention: group pruned"
            );
        }
        Ok((dropped, pruned))
    }
}
