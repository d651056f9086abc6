//! Users coming online and going offline, as `user.online` and `user.offline` webhook events:
//! a user's first session on this node, and their last one leaving it. A departure is told
//! once the presence debounce is over, so a reconnect within it tells nothing at all.
//!
//! They are recorded in the outbox apart from any commit, every `RECORD_EVERY`: a node that
//! dies loses the few not recorded yet, and tells no departure for the users it held.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::model::ids::now_ms;
use crate::store::{Store, StoreError, WebhookRecord};

/// How often arrivals and departures due are recorded.
pub const RECORD_EVERY: Duration = Duration::from_millis(250);

pub struct UserPresence {
    store: Store,
    /// This node's id, in every event: a user online on two nodes comes and goes on each.
    node: String,
    debounce: Duration,
    /// Users whose last session here went, and when; told offline after the debounce.
    leaving: HashMap<u64, (Instant, i64)>,
    /// Events to record at the next tick.
    due: Vec<WebhookRecord>,
}

impl UserPresence {
    pub fn new(store: Store, node: String, debounce: Duration) -> UserPresence {
        UserPresence {
            store,
            node,
            debounce,
            leaving: HashMap::new(),
            due: Vec::new(),
        }
    }

    /// The user's first session on this node opened.
    pub fn came(&mut self, uid: u64) {
        if self.leaving.remove(&uid).is_none() {
            self.tell("user.online", uid, now_ms());
        }
    }

    /// The user's last session on this node closed.
    pub fn went(&mut self, uid: u64) {
        self.leaving.insert(uid, (Instant::now(), now_ms()));
    }

    /// Records what is due (every departure, however recent, with `everyone_left`: the node
    /// is stopping); `None` when nothing is.
    pub fn record_due(
        &mut self,
        everyone_left: bool,
    ) -> Option<impl Future<Output = Result<(), StoreError>>> {
        let now = Instant::now();
        let gone: Vec<(u64, i64)> = self
            .leaving
            .iter()
            .filter(|(_, (since, _))| everyone_left || now - *since >= self.debounce)
            .map(|(uid, (_, at))| (*uid, *at))
            .collect();
        for (uid, at) in gone {
            self.leaving.remove(&uid);
            self.tell("user.offline", uid, at);
        }
        if self.due.is_empty() {
            return None;
        }
        let (store, due) = (self.store.clone(), std::mem::take(&mut self.due));
        Some(async move { store.record_webhooks(&due).await })
    }

    fn tell(&mut self, kind: &'static str, uid: u64, at: i64) {
        let data = serde_json::json!({ "uid": uid, "node": self.node, "at": at });
        self.due.push(WebhookRecord {
            kind,
            data: data.to_string(),
        });
    }
}
