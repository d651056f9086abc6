//! The registry: routes gid → group actor (starting one when needed) and uid → sessions,
//! and carries changes committed in storage (membership, events, versions) to the live
//! actors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::future::join_all;
use smallvec::SmallVec;

use crate::acks::AckWriter;
use crate::close::Close;
use crate::error::ApiError;
use crate::group::{GroupActor, GroupSettings};
use crate::messages::{
    CursorOf, FlushAcks, GroupChange, GroupStep, SessionHandle, SessionId, ToSession,
};
use crate::metrics;
use crate::protocol::GroupCursor;
use crate::store::{Effect, Store};
use crate::sync::SyncNotice;

/// What the registry needs to start group actors.
pub struct GroupFactory {
    pub store: Store,
    pub settings: GroupSettings,
    /// Ack writers; a group uses the one its gid selects, always the same.
    pub ack_writers: Vec<Addr<AckWriter>>,
    /// Threads group actors run on; a group runs on the one its gid selects.
    pub arbiters: Vec<ArbiterHandle>,
}

/// An open session as the registry keeps it.
struct Online {
    handle: SessionHandle,
    /// When its token expires, to find it in `expiries`.
    token_exp: u64,
}

/// How often expired tokens are looked for: sessions close within this of their expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// How many sessions the node holds: in all, and per user.
#[derive(Debug, Clone, Copy)]
pub struct SessionCaps {
    pub total: usize,
    pub per_user: usize,
}

pub struct RegistryActor {
    factory: GroupFactory,
    caps: SessionCaps,
    /// Open sessions, all users together.
    open: usize,
    groups: HashMap<u64, (u64, Addr<GroupActor>)>,
    /// Each user's open sessions: a handful at most, the first kept inline.
    sessions: HashMap<u64, SmallVec<[Online; 1]>>,
    /// Sessions by the expiry of their token (seconds since the epoch), swept every second.
    expiries: BTreeSet<(u64, SessionId, u64)>,
    /// Interval of the pings every session gets.
    heartbeat: Duration,
    /// Tells group actors of one gid apart across restarts of the actor.
    next_generation: u64,
}

impl RegistryActor {
    pub fn new(factory: GroupFactory, heartbeat: Duration, caps: SessionCaps) -> Self {
        RegistryActor {
            factory,
            caps,
            open: 0,
            groups: HashMap::new(),
            sessions: HashMap::new(),
            expiries: BTreeSet::new(),
            heartbeat,
            next_generation: 0,
        }
    }

    fn live_group(&self, gid: u64) -> Option<Addr<GroupActor>> {
        self.groups
            .get(&gid)
            .map(|(_, addr)| addr)
            .filter(|addr| addr.connected())
            .cloned()
    }

    fn group(&mut self, gid: u64, ctx: &mut Context<Self>) -> Addr<GroupActor> {
        if let Some(addr) = self.live_group(gid) {
            return addr;
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let slot = (gid % self.factory.arbiters.len() as u64) as usize;
        let writer = (gid % self.factory.ack_writers.len() as u64) as usize;
        let (store, settings) = (self.factory.store.clone(), self.factory.settings.clone());
        let (ack_writer, registry) = (self.factory.ack_writers[writer].clone(), ctx.address());
        let addr = GroupActor::start_in_arbiter(&self.factory.arbiters[slot], move |_| {
            GroupActor::new(gid, generation, store, registry, ack_writer, settings)
        });
        self.groups.insert(gid, (generation, addr.clone()));
        addr
    }

    /// Closes, with 4001, every session whose token has expired.
    fn close_expired(&mut self) {
        let now = jsonwebtoken::get_current_timestamp();
        while let Some(&(exp, id, uid)) = self.expiries.first() {
            if exp > now {
                break;
            }
            self.expiries.pop_first();
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

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::messages::BUSY_ACTOR_MAILBOX);
        ctx.run_interval(self.heartbeat, |act, _| {
            for online in act.sessions.values().flatten() {
                online.handle.inbox.do_send(ToSession::Heartbeat);
            }
        });
        ctx.run_interval(EXPIRY_SWEEP, |act, _| act.close_expired());
    }
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

impl Handler<Connect> for RegistryActor {
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
        self.expiries.insert((token_exp, session.id, session.uid));
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

impl Handler<Disconnect> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        let Some(sessions) = self.sessions.get_mut(&msg.uid) else {
            return;
        };
        if let Some(at) = sessions.iter().position(|o| o.handle.id == msg.id) {
            let online = sessions.swap_remove(at);
            self.expiries.remove(&(online.token_exp, msg.id, msg.uid));
            self.open -= 1;
        }
        if sessions.is_empty() {
            self.sessions.remove(&msg.uid);
        }
    }
}

/// The group's actor, started if it is not running.
#[derive(Message)]
#[rtype(result = "Addr<GroupActor>")]
pub struct GroupFor(pub u64);

impl Handler<GroupFor> for RegistryActor {
    type Result = MessageResult<GroupFor>;

    fn handle(&mut self, GroupFor(gid): GroupFor, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.group(gid, ctx))
    }
}

/// A group actor stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GroupStopped {
    pub gid: u64,
    pub generation: u64,
}

impl Handler<GroupStopped> for RegistryActor {
    type Result = ();

    fn handle(&mut self, stopped: GroupStopped, _: &mut Self::Context) {
        if self.groups.get(&stopped.gid).map(|(g, _)| *g) == Some(stopped.generation) {
            self.groups.remove(&stopped.gid);
        }
    }
}

/// A committed change's effects, to carry to the live actors: group steps to each group
/// in order, notices and frames to users' sessions, and last the closing of deactivated
/// users' sessions (after their groups were told).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub Vec<Effect>);

impl Handler<Publish> for RegistryActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, Publish(effects): Publish, ctx: &mut Self::Context) -> Self::Result {
        let mut changes: BTreeMap<u64, Vec<GroupStep>> = BTreeMap::new();
        let mut deactivated = Vec::new();
        for effect in effects {
            let (gid, step) = match effect {
                Effect::Joined { gid, uid } => (
                    gid,
                    GroupStep::Join {
                        uid,
                        sessions: self.sessions_of(&[uid]),
                    },
                ),
                Effect::Event { gid, frame } => (gid, GroupStep::Push(frame.to_string().into())),
                Effect::Left { gid, uid } => (gid, GroupStep::Leave(uid)),
                Effect::Disbanded { gid } => (gid, GroupStep::Disband),
                Effect::GroupVersions(versions) => (versions.gid, GroupStep::Notify(versions)),
                Effect::UserVersions(versions) => {
                    let notice = Arc::new(SyncNotice::user(versions));
                    for session in self.sessions_of(&[versions.uid]) {
                        session.inbox.do_send(ToSession::Notify(notice.clone()));
                    }
                    continue;
                }
                Effect::Frame { uid, frame } => {
                    let frames: Arc<[ByteString]> = Arc::from([frame.to_string().into()]);
                    for session in self.sessions_of(&[uid]) {
                        session.push(&frames);
                    }
                    continue;
                }
                Effect::Deactivated { uid } => {
                    deactivated.push(uid);
                    continue;
                }
            };
            changes.entry(gid).or_default().push(step);
        }
        let delivered: Vec<_> = changes
            .into_iter()
            .filter_map(|(gid, steps)| {
                // A group with no actor has nobody online: start one only for someone
                // joining it with a session open.
                let joining_online = steps.iter().any(
                    |step| matches!(step, GroupStep::Join { sessions, .. } if !sessions.is_empty()),
                );
                let group = if joining_online {
                    Some(self.group(gid, ctx))
                } else {
                    self.live_group(gid)
                };
                group.map(|group| group.send(GroupChange(steps)))
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

impl Handler<LiveCursors> for RegistryActor {
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
                    Some(group) => group.send(CursorOf(uid)).await.ok().flatten(),
                    None => None,
                };
                merge_cursors(stored, live)
            });
            join_all(merged).await
        })
    }
}

/// The newer of a stored cursor and a live group's view of it.
pub fn merge_cursors(stored: GroupCursor, live: Option<GroupCursor>) -> GroupCursor {
    match live {
        Some(live) => GroupCursor {
            gid: stored.gid,
            last_ack: stored.last_ack.max(live.last_ack),
            latest: stored.latest.max(live.latest),
        },
        None => stored,
    }
}

/// Close every session (a graceful stop).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll(pub Close);

impl Handler<CloseAll> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: CloseAll, _: &mut Self::Context) {
        for online in self.sessions.values().flatten() {
            online.handle.close(msg.0);
        }
    }
}

/// Write every ack held in memory; replies once they are stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushAll;

impl Handler<FlushAll> for RegistryActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushAll, _: &mut Self::Context) -> Self::Result {
        let flushes: Vec<_> = self
            .groups
            .values()
            .map(|(_, group)| group.send(FlushAcks))
            .collect();
        Box::pin(async move {
            join_all(flushes).await;
        })
    }
}

/// Asks the group `gid` to handle `msg`, starting the group if needed.
pub async fn ask_group<M>(
    registry: &Addr<RegistryActor>,
    gid: u64,
    msg: M,
) -> Result<M::Result, ApiError>
where
    M: Message + Send + 'static,
    M::Result: Send,
    GroupActor: Handler<M>,
{
    let group = registry.send(GroupFor(gid)).await?;
    Ok(group.send(msg).await?)
}
