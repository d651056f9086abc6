//! The cluster bus: how nodes on one PostgreSQL hear of each other's commits, over NATS.
//!
//! PostgreSQL stays the only truth. NATS carries copies of what was committed, at most once
//! (core NATS, no persistence), and every node repairs what it missed from PostgreSQL by
//! position: msgids are dense, so a gap shows. So publishing is best effort, through a
//! bounded queue drained by a task of its own: a send never waits for NATS, and NATS down
//! only means slower repair. See docs/scale-out.md.
//!
//! - `wire`: the subjects, the news on each, how it is checked on arrival.

pub mod wire;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{future, Stream, StreamExt};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use self::wire::{
    check_group_news, decode, encode, group_subject, CommittedNews, EffectsNews, GroupNews, Heard,
    NodeId, NodeNews, Rejected, EFFECTS_SUBJECT, NODES_SUBJECT,
};
use crate::config::ClusterConfig;
use crate::metrics;
use crate::model::effect::Effect;
use crate::model::MessageView;

/// Largest batch of messages carried whole; a larger commit is announced by its msgid only,
/// and the other nodes read it from PostgreSQL (NATS refuses payloads over 1 MiB by default).
const LARGEST_CARRIED: usize = 256 * 1024;

/// News of one group a node may hold unread before NATS drops the rest for it (a slow
/// consumer), which the node then repairs from PostgreSQL.
const GROUP_BACKLOG: usize = 4096;

/// Longest a stopping node waits to tell the others it leaves: best effort, as they notice
/// its silence within seconds anyway.
const LEAVING_WITHIN: Duration = Duration::from_secs(1);

/// How often rejected messages are logged: once per burst, with how many came.
const REJECTS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// A node's handle on the cluster; cloned by every actor that tells or follows.
#[derive(Clone)]
pub struct Bus(Arc<Inner>);

struct Inner {
    node: NodeId,
    client: async_nats::Client,
    outgoing: mpsc::Sender<Outgoing>,
    /// Counts the connections made to NATS: a new value is a reconnect, after which what was
    /// published meanwhile may be lost.
    connections: watch::Receiver<u64>,
    rejects: RejectLog,
}

/// A copy waiting to be published.
struct Outgoing {
    subject: String,
    payload: Bytes,
    kind: &'static str,
}

impl Bus {
    /// Connects to NATS in the background: the node serves at once, alone until NATS answers,
    /// and keeps reconnecting for as long as it runs.
    pub async fn connect(config: &ClusterConfig, urls: &str, node: NodeId) -> anyhow::Result<Bus> {
        let addresses = urls
            .split(',')
            .map(|url| url.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .context("HERALD_NATS_URL")?;
        let (connected, connections) = watch::channel(0u64);
        let connected = Arc::new(connected);
        let mut options = url_credentials(&addresses)
            .name(format!("herald {node}"))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .subscription_capacity(GROUP_BACKLOG)
            .event_callback(move |event| {
                let connected = connected.clone();
                async move { on_event(&event, &connected) }
            });
        if let Some(creds) = &config.nats_creds {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("HERALD_NATS_CREDS: cannot read {}", creds.display()))?;
        }
        if let Some(ca) = &config.nats_tls_ca {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.nats_tls_cert, &config.nats_tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .connect(addresses)
            .await
            .context("HERALD_NATS_URL: cannot set up the NATS client")?;
        let (outgoing, queued) = mpsc::channel(config.publish_queue);
        tokio::spawn(publish_all(client.clone(), queued));
        metrics::global().cluster.name_node(&node.to_string());
        tracing::info!(%node, "joining the cluster over NATS");
        Ok(Bus(Arc::new(Inner {
            node,
            client,
            outgoing,
            connections,
            rejects: RejectLog::default(),
        })))
    }

    /// This node's name.
    pub fn node(&self) -> &NodeId {
        &self.0.node
    }

    /// Publishes messages a group commit stored: whole, or when too large, as a position.
    pub fn tell_committed(&self, gid: u64, msgs: &[MessageView]) {
        let Some(latest) = msgs.last().map(|m| m.msgid) else {
            return;
        };
        let carried: usize = msgs
            .iter()
            .map(|m| m.body.as_ref().map_or(0, |body| body.get().len()) + 64)
            .sum();
        if carried <= LARGEST_CARRIED {
            self.queue(
                group_subject(gid),
                "messages",
                &CommittedNews::Messages(msgs),
            );
        } else {
            self.tell_group(gid, &GroupNews::Committed { latest });
        }
    }

    /// Publishes news of a group to the nodes following it.
    pub fn tell_group(&self, gid: u64, news: &GroupNews) {
        self.queue(group_subject(gid), news.kind(), news);
    }

    /// Publishes a committed change's effects to every node.
    pub fn tell_effects(&self, effects: &[Effect]) {
        self.queue(EFFECTS_SUBJECT.to_owned(), "effects", &effects);
    }

    /// Publishes this node's heartbeat, or its leaving.
    pub fn tell_nodes(&self, news: NodeNews) {
        let kind = match news {
            NodeNews::Alive => "alive",
            NodeNews::Leaving => "leaving",
        };
        self.queue(NODES_SUBJECT.to_owned(), kind, &news);
    }

    /// Queues a copy for publishing, or drops it when the queue is full: never waits.
    fn queue<T: Serialize>(&self, subject: String, kind: &'static str, news: &T) {
        let payload = Bytes::from(encode(&self.0.node, news));
        let copy = Outgoing {
            subject,
            payload,
            kind,
        };
        if self.0.outgoing.try_send(copy).is_err() {
            metrics::global().cluster.publish_dropped.inc();
        }
    }

    /// Follows one group's news until the stream is dropped (which unsubscribes).
    pub async fn follow_group(
        &self,
        gid: u64,
    ) -> anyhow::Result<impl Stream<Item = Heard<GroupNews>> + 'static> {
        let heard = self.follow::<GroupNews>(group_subject(gid)).await?;
        let bus = self.clone();
        Ok(heard.filter(move |heard| {
            let checked = check_group_news(gid, &heard.news);
            if let Err(rejected) = &checked {
                bus.0.rejects.note(&heard.from.to_string(), rejected);
            }
            future::ready(checked.is_ok())
        }))
    }

    /// Follows every committed change's effects, from the other nodes.
    pub async fn follow_effects(
        &self,
    ) -> anyhow::Result<impl Stream<Item = Heard<EffectsNews>> + 'static> {
        self.follow(EFFECTS_SUBJECT.to_owned()).await
    }

    /// Follows the other nodes' heartbeats.
    pub async fn follow_nodes(
        &self,
    ) -> anyhow::Result<impl Stream<Item = Heard<NodeNews>> + 'static> {
        self.follow(NODES_SUBJECT.to_owned()).await
    }

    async fn follow<T: DeserializeOwned + Send + 'static>(
        &self,
        subject: String,
    ) -> anyhow::Result<impl Stream<Item = Heard<T>> + 'static> {
        let subscriber = self
            .0
            .client
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("cannot subscribe to {subject}"))?;
        let bus = self.clone();
        Ok(subscriber.filter_map(move |message| {
            let heard = match decode::<T>(&bus.0.node, &message.payload) {
                Ok(heard) => heard,
                Err(rejected) => {
                    bus.0.rejects.note(message.subject.as_str(), &rejected);
                    None
                }
            };
            future::ready(heard)
        }))
    }

    /// Yields once after every reconnect to NATS (not the first connection), when copies
    /// published meanwhile may be lost.
    pub fn reconnects(&self) -> impl Stream<Item = ()> + 'static {
        let mut connections = self.0.connections.clone();
        connections.mark_unchanged();
        futures_util::stream::unfold(connections, |mut connections| async move {
            loop {
                connections.changed().await.ok()?;
                if *connections.borrow_and_update() > 1 {
                    return Some(((), connections));
                }
            }
        })
    }

    /// Tells the others this node leaves, and waits (briefly) until NATS has it; not at all
    /// when NATS is away.
    pub async fn leave(&self) {
        if self.0.client.connection_state() != async_nats::connection::State::Connected {
            tracing::info!("NATS is away: the other nodes will notice this node's silence");
            return;
        }
        let payload = Bytes::from(encode(&self.0.node, &NodeNews::Leaving));
        let told = async {
            self.0.client.publish(NODES_SUBJECT, payload).await?;
            self.0.client.flush().await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(LEAVING_WITHIN, told).await {
            Ok(Ok(())) => tracing::info!("told the cluster this node leaves"),
            Ok(Err(error)) => tracing::warn!(%error, "could not tell the cluster this node leaves"),
            Err(_) => tracing::warn!("NATS did not take this node's leaving in time"),
        }
    }
}

/// Publishes queued copies one after another, for the life of the process. A publish waits
/// while NATS is away (the client's own buffer is full); the queue in front fills meanwhile,
/// and copies past it are dropped, never the sends.
async fn publish_all(client: async_nats::Client, mut queued: mpsc::Receiver<Outgoing>) {
    let metrics = &metrics::global().cluster;
    while let Some(copy) = queued.recv().await {
        match client.publish(copy.subject, copy.payload).await {
            Ok(()) => metrics.published(copy.kind),
            Err(error) => {
                metrics.publish_dropped.inc();
                tracing::debug!(%error, "a copy was not published");
            }
        }
    }
}

/// Connection options with the credentials written in a server URL (`nats://user:pass@…`,
/// or `nats://token@…`), percent-decoded: async-nats parses them but does not send them.
/// The first URL that has any gives them for every server.
fn url_credentials(addresses: &[async_nats::ServerAddr]) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new();
    let Some(address) = addresses.iter().find(|address| address.has_user_pass()) else {
        return options;
    };
    let decoded = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    let user = decoded(address.username().unwrap_or_default());
    match address.password() {
        Some(password) => options.user_and_password(user, decoded(password)),
        None => options.token(user),
    }
}

/// The NATS connection's events, into the log and the metrics.
fn on_event(event: &async_nats::Event, connections: &watch::Sender<u64>) {
    let metrics = &metrics::global().cluster;
    match event {
        async_nats::Event::Connected => {
            metrics.nats_connected.set(1);
            connections.send_modify(|count| *count += 1);
            tracing::info!("connected to NATS");
        }
        async_nats::Event::Disconnected => {
            metrics.nats_connected.set(0);
            tracing::warn!("disconnected from NATS; repairing from PostgreSQL until it is back");
        }
        async_nats::Event::SlowConsumer(subscription) => {
            tracing::warn!(subscription, "NATS dropped news this node read too slowly");
        }
        other => tracing::info!(event = %other, "NATS"),
    }
}

/// Rejected messages, logged once per burst with how many came, so a flood of junk on the
/// bus cannot flood the log.
#[derive(Default)]
struct RejectLog {
    /// When the last line was logged, and how many were rejected since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RejectLog {
    fn note(&self, source: &str, rejected: &Rejected) {
        metrics::global().cluster.rejected.inc();
        let mut state = self.state.lock().expect("never poisoned: no panics inside");
        let (logged, since) = &mut *state;
        *since += 1;
        if logged.is_none_or(|at| at.elapsed() >= REJECTS_LOGGED_EVERY) {
            tracing::warn!(source, error = %rejected, rejected = *since,
                "dropped messages from NATS that are not Herald news");
            *logged = Some(Instant::now());
            *since = 0;
        }
    }
}
