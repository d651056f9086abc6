//! The ack writer: turns coalesced watermarks — acks (received) and read positions — into
//! batched `UPDATE`s.
//!
//! Groups hand their acks over once per flush interval. Each writer owns a disjoint share
//! of the groups (gid modulo the number of writers), so two writers never update the same
//! rows and their batches cannot deadlock; inside a batch the keys are sorted.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::messages::WriteAcks;
use crate::metrics;
use crate::model::Mark;
use crate::store::{AckUpdate, Store};

/// Most rows in one statement; more wait for the next write.
const MAX_ROWS_PER_WRITE: usize = 5000;
/// Pause before retrying after PostgreSQL refused a write.
const RETRY_AFTER: Duration = Duration::from_millis(500);

pub struct AckWriter {
    store: Store,
    /// Highest watermark per (mark, gid, uid) not yet written: later ones overwrite earlier.
    pending: HashMap<(Mark, u64, u64), u64>,
    /// Callers waiting until everything queued before them is stored.
    waiters: Vec<oneshot::Sender<()>>,
    /// One write at a time, so the writer's updates to a row land in order.
    writing: bool,
}

impl AckWriter {
    pub fn new(store: Store) -> Self {
        AckWriter {
            store,
            pending: HashMap::new(),
            waiters: Vec::new(),
            writing: false,
        }
    }

    fn queue(&mut self, acks: impl IntoIterator<Item = AckUpdate>) {
        for ack in acks {
            let watermark = self
                .pending
                .entry((ack.mark, ack.gid, ack.uid))
                .or_insert(0);
            *watermark = (*watermark).max(ack.msgid);
        }
    }

    fn write_next(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        if self.pending.is_empty() {
            self.waiters.drain(..).for_each(|w| {
                let _ = w.send(());
            });
            return;
        }
        let keys: Vec<(Mark, u64, u64)> = self
            .pending
            .keys()
            .take(MAX_ROWS_PER_WRITE)
            .copied()
            .collect();
        let mut batch: Vec<AckUpdate> = keys
            .into_iter()
            .map(|(mark, gid, uid)| AckUpdate {
                mark,
                gid,
                uid,
                msgid: self.pending.remove(&(mark, gid, uid)).unwrap_or_default(),
            })
            .collect();
        self.writing = true;
        let store = self.store.clone();
        let write = async move {
            let result = store.flush_acks(&mut batch).await;
            (batch, result)
        };
        ctx.spawn(write.into_actor(self).map(|(batch, result), act, ctx| {
            act.writing = false;
            match result {
                Ok(rows) => {
                    let metrics = metrics::global();
                    metrics.acks_flushed.inc_by(rows);
                    metrics.ack_batch_size.observe(batch.len() as f64);
                    act.write_next(ctx);
                }
                Err(error) => {
                    tracing::warn!(%error, rows = batch.len(), "ack flush failed; will retry");
                    act.queue(batch);
                    ctx.run_later(RETRY_AFTER, |act, ctx| act.write_next(ctx));
                }
            }
        }));
    }
}

impl Actor for AckWriter {
    type Context = Context<Self>;
}

impl Handler<WriteAcks> for AckWriter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, WriteAcks(acks): WriteAcks, ctx: &mut Self::Context) -> Self::Result {
        self.queue(acks);
        let (done, stored) = oneshot::channel();
        self.waiters.push(done);
        self.write_next(ctx);
        Box::pin(async move {
            let _ = stored.await;
        })
    }
}
