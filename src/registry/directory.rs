//! The directory: gid → group actor (starting one when needed), uid → open sessions, and
//! the node's caps on sessions. It carries out the deliveries the publisher makes. In a
//! cluster it also keeps the node's heartbeat and hears the others' (a node gone silent
//! takes its members' presence along), and checks where the live groups stand in
//! PostgreSQL, in one query for all of them, so a message whose copy NATS lost is found.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use futures_util::StreamExt;
use smallvec::SmallVec;

use super::ticker::{Ticker, EXPIRY_SWEEP};
use crate::acks::AckWriter;
use crate::close::Close;
use crate::cluster::wire::{Heard, NodeId, NodeNews};
use crate::error::ApiError;
use crate::group::{GroupActor, GroupLinks, GroupSettings};
use crate::messages::{
    CursorOf, Deliver, Deliveries, FlushAcks, GroupChange, GroupHandle, GroupRequest, GroupStep,
    GroupStopped, NodeGone, Position, SessionHandle, SessionId, SessionsOf, ToSession,
};
use crate::metrics;
use crate::model::GroupCursor;
use crate::store::Store;
use crate::webhooks::{UserPresence, PRESENCE_RECORD_EVERY};

/// What the directory needs to start group actors.
pub struct GroupFactory {
    pub store: Store,
    pub settings: GroupSettings,
    /// Ack writers; a group uses the one its gid selects, always the same.
    pub ack_writers: Vec<Addr<AckWriter>>,
    /// Threads group actors run on; a group runs on the one its gid selects.
    pub arbiters: Vec<ArbiterHandle>,
    /// How often the live groups' positions are checked (in a cluster).
    pub position_check: Duration,
}

/// How often a node tells the cluster it is alive.
const NODE_HEARTBEAT: Duration = Duration::from_secs(1);

/// A node not heard from for this long is gone, and its members' presence with it.
const NODE_SILENCE: Duration = Duration::from_secs(3);

/// Most groups whose positions one query reads.
const POSITIONS_PER_QUERY: usize = 5000;

/// The bus connection came back: what was published meanwhile may be lost.
struct Reconnected;

/// An open session as the directory keeps it.
struct Online {
    handle: SessionHandle,
    /// When its token expires, to find it in the ticker.
    token_exp: u64,
}

/// How many sessions the node holds: in all, and per user.
#[derive(Debug, Clone, Copy)]
pub struct SessionCaps {
    pub total: usize,
    pub per_user: usize,
}

pub struct Directory {
    factory: GroupFactory,
    caps: SessionCaps,
    /// Open sessions, all users together.
    open: usize,
    /// Each running group actor, with the generation it was started as.
    groups: HashMap<u64, (u64, GroupHandle)>,
    /// Each user's open sessions: a handful at most, the first kept inline.
    sessions: HashMap<u64, SmallVec<[Online; 1]>>,
    /// Heartbeats and token expiries.
    ticker: Ticker,
    /// Tells group actors of one gid apart across restarts of the actor.
    next_generation: u64,
    /// The other nodes of the cluster, and when each was last heard from.
    nodes: HashMap<NodeId, Instant>,
    /// Users coming and going, told to the webhook; `None` without webhooks.
    user_presence: Option<UserPresence>,
}

impl Directory {
    pub fn new(
        factory: GroupFactory,
        heartbeat: Duration,
        caps: SessionCaps,
        user_presence: Option<UserPresence>,
    ) -> Self {
        Directory {
            factory,
            caps,
            open: 0,
            groups: HashMap::new(),
            sessions: HashMap::new(),
            ticker: Ticker::new(heartbeat),
            next_generation: 0,
            nodes: HashMap::new(),
            user_presence,
        }
    }

    /// Records the users' arrivals and departures due for the webhook (every departure, when
    /// `everyone_left`).
    fn record_user_presence(&mut self, everyone_left: bool) -> Option<impl Future<Output = ()>> {
        let recording = self.user_presence.as_mut()?.record_due(everyone_left)?;
        Some(async move {
            if let Err(error) = recording.await {
                tracing::warn!(%error, "cannot record users coming and going for the webhook");
            }
        })
    }

    /// Checks the live groups' newest msgids in PostgreSQL, and tells each group where it
    /// stands: one query per few thousand groups.
    fn check_positions(&mut self, ctx: &mut Context<Self>) {
        let gids: Vec<u64> = self.groups.keys().copied().collect();
        for chunk in gids.chunks(POSITIONS_PER_QUERY) {
            let (store, chunk) = (self.factory.store.clone(), chunk.to_vec());
            let reading = async move { store.group_positions(&chunk).await };
            ctx.spawn(reading.into_actor(self).map(|read, act, _| match read {
                Ok(positions) => {
                    metrics::global().cluster.position_checks.inc();
                    for position in positions {
                        if let Some(group) = act.live_group(position.gid) {
                            group.tell(Position {
                                latest: position.latest,
                                version: position.version,
                            });
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot check the groups' positions"),
            }));
        }
    }

    /// Tells every live group that `node` is gone.
    fn node_gone(&mut self, node: NodeId) {
        self.nodes.remove(&node);
        metrics::global()
            .cluster
            .nodes_seen
            .set(self.nodes.len() as i64);
        tracing::info!(%node, "node gone: its members' presence goes with it");
        for (_, group) in self.groups.values() {
            group.tell(NodeGone(node.clone()));
        }
    }

    /// Tells the cluster this node is alive, and forgets the nodes gone silent.
    fn beat(&mut self) {
        if let Some(bus) = &self.factory.settings.bus {
            bus.tell_nodes(NodeNews::Alive);
        }
        let silent: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, heard)| heard.elapsed() >= NODE_SILENCE)
            .map(|(node, _)| node.clone())
            .collect();
        for node in silent {
            self.node_gone(node);
        }
    }

    /// Follows the cluster: the other nodes' heartbeats, the bus's reconnects, and the
    /// periodic position checks.
    fn join_cluster(&mut self, ctx: &mut Context<Self>) {
        let Some(bus) = self.factory.settings.bus.clone() else {
            return;
        };
        ctx.add_stream(bus.reconnects().map(|()| Reconnected));
        let following = async move { bus.follow_nodes().await };
        ctx.spawn(
            following
                .into_actor(self)
                .map(|followed, _, ctx| match followed {
                    Ok(nodes) => {
                        ctx.add_stream(nodes);
                    }
                    Err(error) => tracing::error!(%error, "cannot follow the cluster's nodes"),
                }),
        );
        ctx.run_interval(NODE_HEARTBEAT, |act, _| act.beat());
        ctx.run_interval(self.factory.position_check, |act, ctx| {
            act.check_positions(ctx)
        });
    }

    fn live_group(&self, gid: u64) -> Option<GroupHandle> {
        self.groups
            .get(&gid)
            .map(|(_, group)| group)
            .filter(|group| group.alive())
            .cloned()
    }

    fn group(&mut self, gid: u64, ctx: &mut Context<Self>) -> GroupHandle {
        self.group_replaying(gid, None, ctx)
    }

    /// The group's actor, started if it is not running; one started for a change to carry
    /// out starts its version order just before the change's first event (`replay_from`).
    fn group_replaying(
        &mut self,
        gid: u64,
        replay_from: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> GroupHandle {
        if let Some(addr) = self.live_group(gid) {
            return addr;
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let slot = (gid % self.factory.arbiters.len() as u64) as usize;
        let writer = (gid % self.factory.ack_writers.len() as u64) as usize;
        let (store, settings) = (self.factory.store.clone(), self.factory.settings.clone());
        let ack_writer = self.factory.ack_writers[writer].clone().recipient();
        let links = GroupLinks {
            stopped: ctx.address().recipient(),
            sessions: ctx.address().recipient(),
            ack_writer,
        };
        let addr = GroupActor::start_in_arbiter(&self.factory.arbiters[slot], move |_| {
            GroupActor::new(gid, generation, store, links, settings, replay_from)
        });
        let group = GroupActor::handle(&addr);
        self.groups.insert(gid, (generation, group.clone()));
        group
    }

    /// Closes, with 4001, every session whose token has expired.
    fn close_expired(&mut self) {
        let now = jsonwebtoken::get_current_timestamp();
        for (id, uid) in self.ticker.take_due(now) {
            let sessions = self.sessions.get(&uid).into_iter().flatten();
            if let Some(online) = sessions.into_iter().find(|o| o.handle.id == id) {
                online.handle.close(Close::TOKEN_EXPIRED);
            }
        }
    }

    fn sessions_of(&self, uids: &[u64]) -> Vec<SessionHandle> {
        uids.iter()
            .filter_map(|uid| self.sessions.get(uid))
            .flat_map(|sessions| sessions.iter().map(|o| o.handle.clone()))
            .collect()
    }
}

impl Actor for Directory {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::messages::BUSY_ACTOR_MAILBOX);
        ctx.run_interval(self.ticker.heartbeat(), |act, _| {
            for online in act.sessions.values().flatten() {
                online.handle.inbox.do_send(ToSession::Heartbeat);
            }
        });
        ctx.run_interval(EXPIRY_SWEEP, |act, _| act.close_expired());
        if self.user_presence.is_some() {
            ctx.run_interval(PRESENCE_RECORD_EVERY, |act, ctx| {
                if let Some(recording) = act.record_user_presence(false) {
                    ctx.spawn(recording.into_actor(act));
                }
            });
        }
        self.join_cluster(ctx);
    }
}

impl StreamHandler<Heard<NodeNews>> for Directory {
    fn handle(&mut self, heard: Heard<NodeNews>, _: &mut Self::Context) {
        match heard.news {
            NodeNews::Alive => {
                if self
                    .nodes
                    .insert(heard.from.clone(), Instant::now())
                    .is_none()
                {
                    metrics::global()
                        .cluster
                        .nodes_seen
                        .set(self.nodes.len() as i64);
                    tracing::info!(node = %heard.from, "node joined the cluster");
                }
            }
            NodeNews::Leaving => self.node_gone(heard.from),
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl StreamHandler<Reconnected> for Directory {
    fn handle(&mut self, _: Reconnected, ctx: &mut Self::Context) {
        tracing::info!("back on NATS: checking every live group's position now");
        self.check_positions(ctx);
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// A session opened, with a token valid until `token_exp` (seconds since the epoch). It is
/// admitted within the caps, or refused with how to close it: the newest session is the one
/// refused, so the sessions in use carry on.
#[derive(Message)]
#[rtype(result = "Result<(), Close>")]
pub struct Connect {
    pub session: SessionHandle,
    pub token_exp: u64,
}

impl Handler<Connect> for Directory {
    type Result = Result<(), Close>;

    fn handle(
        &mut self,
        Connect { session, token_exp }: Connect,
        _: &mut Self::Context,
    ) -> Self::Result {
        if self.open >= self.caps.total {
            metrics::global().sessions_refused.inc();
            return Err(Close::SERVER_FULL);
        }
        let sessions = self.sessions.entry(session.uid).or_default();
        if sessions.len() >= self.caps.per_user {
            metrics::global().sessions_refused.inc();
            return Err(Close::TOO_MANY_SESSIONS);
        }
        self.open += 1;
        if sessions.is_empty() {
            if let Some(presence) = &mut self.user_presence {
                presence.came(session.uid);
            }
        }
        self.ticker.track(token_exp, session.id, session.uid);
        sessions.push(Online {
            handle: session,
            token_exp,
        });
        Ok(())
    }
}

/// A session closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub uid: u64,
    pub id: SessionId,
}

impl Handler<Disconnect> for Directory {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        let Some(sessions) = self.sessions.get_mut(&msg.uid) else {
            return;
        };
        if let Some(at) = sessions.iter().position(|o| o.handle.id == msg.id) {
            let online = sessions.swap_remove(at);
            self.ticker.forget(online.token_exp, msg.id, msg.uid);
            self.open -= 1;
        }
        if sessions.is_empty() {
            self.sessions.remove(&msg.uid);
            if let Some(presence) = &mut self.user_presence {
                presence.went(msg.uid);
            }
        }
    }
}

/// The group's actor, started if it is not running.
#[derive(Message)]
#[rtype(result = "GroupHandle")]
pub struct GroupFor(pub u64);

impl Handler<GroupFor> for Directory {
    type Result = MessageResult<GroupFor>;

    fn handle(&mut self, GroupFor(gid): GroupFor, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.group(gid, ctx))
    }
}

impl Handler<SessionsOf> for Directory {
    type Result = MessageResult<SessionsOf>;

    fn handle(&mut self, SessionsOf(uids): SessionsOf, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.sessions_of(&uids))
    }
}

impl Handler<GroupStopped> for Directory {
    type Result = ();

    fn handle(&mut self, stopped: GroupStopped, _: &mut Self::Context) {
        if self.groups.get(&stopped.gid).map(|(g, _)| *g) == Some(stopped.generation) {
            self.groups.remove(&stopped.gid);
        }
    }
}

impl Handler<Deliver> for Directory {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, Deliver(deliveries): Deliver, ctx: &mut Self::Context) -> Self::Result {
        let Deliveries {
            groups,
            notices,
            frames,
            deactivated,
        } = deliveries;
        for (uid, notice) in notices {
            for session in self.sessions_of(&[uid]) {
                session.inbox.do_send(ToSession::Notify(notice.clone()));
            }
        }
        for (uid, frames) in frames {
            for session in self.sessions_of(&[uid]) {
                session.push(&frames);
            }
        }
        let delivered: Vec<_> = groups
            .into_iter()
            .filter_map(|(gid, mut steps)| {
                let mut joining_online = false;
                let mut first_event = None;
                for step in &mut steps {
                    match step {
                        GroupStep::Join { uid, sessions } => {
                            *sessions = self.sessions_of(&[*uid]);
                            joining_online |= !sessions.is_empty();
                        }
                        GroupStep::Event { version, .. } => {
                            first_event = first_event.or(Some(*version));
                        }
                        _ => {}
                    }
                }
                // A group with no actor has nobody online: start one only for someone
                // joining it with a session open.
                let group = if joining_online {
                    Some(self.group_replaying(gid, first_event, ctx))
                } else {
                    self.live_group(gid)
                };
                group.map(|group| group.ask(GroupChange(steps)))
            })
            .collect();
        Box::pin(join_all(delivered).into_actor(self).map(move |_, act, _| {
            // Closed after their groups' events were queued to them, so those arrive first.
            for session in act.sessions_of(&deactivated) {
                session.close(Close::DEACTIVATED);
            }
        }))
    }
}

/// The user's cursors merged with what live groups know (acks not yet written).
#[derive(Message)]
#[rtype(result = "Vec<GroupCursor>")]
pub struct LiveCursors {
    pub uid: u64,
    pub stored: Vec<GroupCursor>,
}

impl Handler<LiveCursors> for Directory {
    type Result = ResponseFuture<Vec<GroupCursor>>;

    fn handle(&mut self, msg: LiveCursors, _: &mut Self::Context) -> Self::Result {
        let uid = msg.uid;
        let asks: Vec<_> = msg
            .stored
            .into_iter()
            .map(|stored| (stored, self.live_group(stored.gid)))
            .collect();
        Box::pin(async move {
            let merged = asks.into_iter().map(|(stored, group)| async move {
                let live = match group {
                    Some(group) => group.ask(CursorOf(uid)).await.ok().flatten(),
                    None => None,
                };
                stored.merge(live)
            });
            join_all(merged).await
        })
    }
}

/// Close every session (a graceful stop).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll(pub Close);

impl Handler<CloseAll> for Directory {
    type Result = ();

    fn handle(&mut self, msg: CloseAll, _: &mut Self::Context) {
        for online in self.sessions.values().flatten() {
            online.handle.close(msg.0);
        }
    }
}

/// Write every ack held in memory, and every user's departure for the webhook (the node is
/// stopping); replies once they are stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushAll;

impl Handler<FlushAll> for Directory {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushAll, _: &mut Self::Context) -> Self::Result {
        let flushes: Vec<_> = self
            .groups
            .values()
            .map(|(_, group)| group.ask(FlushAcks))
            .collect();
        let departures = self.record_user_presence(true);
        Box::pin(async move {
            join_all(flushes).await;
            if let Some(departures) = departures {
                departures.await;
            }
        })
    }
}

/// Asks the group `gid` to handle `msg`, starting the group if needed.
pub async fn ask_group<M: GroupRequest>(
    directory: &Addr<Directory>,
    gid: u64,
    msg: M,
) -> Result<M::Result, ApiError> {
    let group = directory.send(GroupFor(gid)).await?;
    Ok(group.ask(msg).await?)
}
