//! The group actor: one per active group. It knows the members and which of their
//! sessions are online, commits sends in batches (group commit), fans each committed
//! message out once to every online session, and coalesces the members' acks.
//!
//! The group never waits on a session: pushes are pre-serialised frames queued with
//! `do_send`, bounded by each session's outbox. In a cluster the group follows its subject
//! on the bus while it runs: it publishes what it commits, pushes what other nodes commit,
//! and reads from PostgreSQL whatever msgid it sees missing, so pushes stay dense on every
//! node. It also keeps who of its members is online, and tells of their coming and going.
//! Its decisions live in `policy`; this module carries them out.

mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::oneshot;
use tracing::Instrument;

use self::policy::{
    judge_ack, AckVerdict, CommitQueue, InOrder, InTurn, MemberAcks, Presence, VersionOrder,
};
use crate::budget::{Limit, RequestKind};
use crate::cluster::wire::{GroupNews, Heard};
use crate::cluster::Bus;
use crate::error::{ApiError, ErrorCode};
use crate::messages::{
    AckUpTo, CursorOf, FlushAcks, GroupChange, GroupHandle, GroupInbox, GroupStep, GroupStopped,
    Join, Leave, NodeGone, OnlineIn, Position, SessionHandle, SessionId, SessionsOf, Submit,
    ToSession, WriteAcks,
};
use crate::metrics;
use crate::model::event::{GroupEvent, LoggedEvent};
use crate::model::refusal::Refusal;
use crate::model::sync::SyncNotice;
use crate::model::{now_ms, GroupCursor, MessageView};
use crate::protocol::ServerFrame;
use crate::store::{AckUpdate, AppendOutcome, Appended, NewMessage, Store, StoreError};

/// How long a gap in msgids may stand before it is read from PostgreSQL: copies from
/// different nodes, and this node's own commit replies, often arrive a little out of order.
const GAP_GRACE: Duration = Duration::from_millis(10);

/// How long a change may wait for one of an earlier version before the versions missing are
/// read from the event log: changes made at once (on one node or several) often arrive a
/// little out of order.
const EVENT_GRACE: Duration = Duration::from_millis(100);

/// Messages held above a gap while it is read; past it, the newest are read again later.
const HELD_ABOVE_GAP: usize = 10_000;

/// How long a newly started group waits for the other nodes to say who is online there
/// before it answers who is online.
const PRESENCE_SETTLE: Duration = Duration::from_millis(300);

/// How often a group tells the other nodes everyone online here, which repairs a lost
/// presence change.
const PRESENCE_REFRESH: Duration = Duration::from_secs(10);

/// What a node told of its members' presence is forgotten when it has not been refreshed for
/// this long (its death is normally noticed sooner, by its heartbeats).
const PRESENCE_SILENCE: Duration = Duration::from_secs(30);

/// How long a group that failed to load answers with its error before it stops (a later
/// request starts a fresh actor, which tries again).
const FAILED_LINGER: Duration = Duration::from_secs(1);

/// How long a read of the group's stored newest msgid is trusted for acks above what this
/// actor committed (other nodes may have stored more): an ack above it within this time is
/// refused without asking PostgreSQL again, so bogus acks cost at most one read per period.
const STORED_LATEST_FRESH: Duration = Duration::from_millis(250);

/// What every group actor is built with.
#[derive(Clone)]
pub struct GroupSettings {
    pub max_batch: usize,
    /// Sends that may wait for their commit; past it sends are refused `rate_limited`.
    pub max_queue: usize,
    pub ack_flush: Duration,
    pub idle: Duration,
    /// Groups with more members than this have no presence.
    pub presence_max_group: usize,
    pub presence_debounce: Duration,
    /// The cluster bus; `None` on a node that runs alone.
    pub bus: Option<Bus>,
}

/// Who a group actor reports to and hands work to.
pub struct GroupLinks {
    /// The directory, told when the actor stops.
    pub stopped: Recipient<GroupStopped>,
    /// The directory, asked for the sessions of members whose arrival was read from the log.
    pub sessions: Recipient<SessionsOf>,
    pub ack_writer: Recipient<WriteAcks>,
}

/// A send waiting for its group-commit transaction.
struct PendingSend {
    message: NewMessage,
    reply: oneshot::Sender<Result<Appended, ApiError>>,
}

/// An ack above every msgid this actor knows, waiting for the read of storage in flight.
struct WaitingAck {
    uid: u64,
    msgid: u64,
    reply: oneshot::Sender<Result<(), ApiError>>,
}

pub struct GroupActor {
    gid: u64,
    /// Carries `gid` to every log line of the group's work, storage errors included.
    span: tracing::Span,
    /// Tells the directory which actor stopped, so a newer one is not forgotten.
    generation: u64,
    store: Store,
    links: GroupLinks,
    settings: GroupSettings,
    /// Set when the group could not be loaded; every request gets it until the actor stops.
    failed: Option<ApiError>,
    /// Pushes in msgid order with no gap; the newest msgid known committed.
    in_order: InOrder,
    /// Set while a gap is waited out or read from PostgreSQL.
    filling: bool,
    /// The group's changes, in version order.
    changes: VersionOrder<Vec<GroupStep>>,
    /// Where the version order starts once loaded, if the actor was started for a change.
    replay_from: Option<u64>,
    /// Set while missing versions are waited out or read from the event log.
    repairing: bool,
    /// Every member and the highest msgid they acked (written or not).
    acks: MemberAcks,
    online: HashMap<SessionId, SessionHandle>,
    presence: Presence,
    /// Online sessions that asked who is online, and are told of every change since.
    watching: HashSet<SessionId>,
    started: Instant,
    queue: CommitQueue<PendingSend>,
    /// Set while sends are refused for a full queue, so the refusal is logged once a burst.
    busy: bool,
    /// The newest msgid storage held when last read (commits of other nodes included), and
    /// when it was read: what acks above `latest` are checked against.
    stored_latest: Option<(u64, Instant)>,
    /// Acks waiting for that read; at most one per session, as sessions forward one at a time.
    acks_waiting: Vec<WaitingAck>,
    /// One read of the stored newest msgid at a time, shared by every ack waiting for it.
    reading_latest: bool,
    idle_since: Option<Instant>,
}

impl GroupActor {
    pub fn new(
        gid: u64,
        generation: u64,
        store: Store,
        links: GroupLinks,
        settings: GroupSettings,
        replay_from: Option<u64>,
    ) -> Self {
        let queue = CommitQueue::new(settings.max_queue, settings.max_batch);
        GroupActor {
            gid,
            span: tracing::info_span!("group", gid),
            generation,
            store,
            links,
            settings,
            failed: None,
            in_order: InOrder::new(0, HELD_ABOVE_GAP),
            filling: false,
            changes: VersionOrder::new(0),
            replay_from,
            repairing: false,
            acks: MemberAcks::default(),
            online: HashMap::new(),
            presence: Presence::default(),
            watching: HashSet::new(),
            started: Instant::now(),
            queue,
            busy: false,
            stored_latest: None,
            acks_waiting: Vec::new(),
            reading_latest: false,
            idle_since: None,
        }
    }

    /// The handle others reach the group by.
    pub fn handle(group: &Addr<GroupActor>) -> GroupHandle {
        GroupHandle::new(GroupInbox {
            join: group.clone().recipient(),
            leave: group.clone().recipient(),
            submit: group.clone().recipient(),
            ack: group.clone().recipient(),
            cursor: group.clone().recipient(),
            change: group.clone().recipient(),
            flush: group.clone().recipient(),
            position: group.clone().recipient(),
            node_gone: group.clone().recipient(),
            online: group.clone().recipient(),
        })
    }

    /// Enters the group's span until the guard drops.
    fn in_span(&self) -> tracing::span::EnteredSpan {
        self.span.clone().entered()
    }

    /// Why `uid` may not act in this group, if it may not.
    fn refusal(&self, uid: u64) -> Option<ApiError> {
        if let Some(failed) = &self.failed {
            return Some(failed.clone());
        }
        (!self.acks.is_member(uid)).then(|| Refusal::NotMember { gid: self.gid }.into())
    }

    fn fail(&mut self, error: ApiError, ctx: &mut Context<Self>) {
        self.failed = Some(error);
        ctx.run_later(FAILED_LINGER, |_, ctx| ctx.stop());
    }

    /// Starts the next group-commit transaction if none is running: everything queued
    /// since the last one, up to `max_batch`, is committed together.
    fn write_next(&mut self, ctx: &mut Context<Self>) {
        let Some(batch) = self.queue.next_batch() else {
            return;
        };
        let (messages, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.message, p.reply)).unzip();
        let (store, gid) = (self.store.clone(), self.gid);
        let commit = async move {
            let outcome = store.append(gid, &messages).await;
            (messages, outcome)
        };
        ctx.spawn(commit.instrument(self.span.clone()).into_actor(self).map(
            |(messages, outcome), act, ctx| {
                let _span = act.in_span();
                act.queue.committed();
                act.committed(messages, replies, outcome);
                act.fill_gaps(ctx);
                act.write_next(ctx);
            },
        ));
    }

    /// Replies to the senders, tells the other nodes, and pushes what was stored, in msgid
    /// order.
    fn committed(
        &mut self,
        messages: Vec<NewMessage>,
        replies: Vec<oneshot::Sender<Result<Appended, ApiError>>>,
        outcome: Result<AppendOutcome, StoreError>,
    ) {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(%error, "group commit failed");
                let error = ApiError::from(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
        };
        let metrics = metrics::global();
        metrics.send_batch_size.observe(messages.len() as f64);
        let mut views = Vec::with_capacity(messages.len());
        for ((message, reply), result) in messages.into_iter().zip(replies).zip(outcome.results) {
            let _ = reply.send(Ok(result));
            if result.dup {
                metrics.duplicate_sends.inc();
            } else {
                metrics.messages_stored.inc();
                views.push(MessageView {
                    gid: self.gid,
                    msgid: result.msgid,
                    from: message.sender,
                    ts: message.ts,
                    cmid: message.cmid,
                    body: message.body,
                });
            }
        }
        if let Some(bus) = &self.settings.bus {
            bus.tell_committed(self.gid, &views);
        }
        self.in_order.committed_up_to(outcome.latest);
        let ready = self.in_order.admit(views);
        self.push_messages(&ready);
    }

    /// Pushes messages (in msgid order, with no gap) to every online session.
    fn push_messages(&mut self, msgs: &[MessageView]) {
        if msgs.is_empty() {
            return;
        }
        let frames = msgs
            .iter()
            .map(|m| ServerFrame::Msg(m).encode().into())
            .collect();
        self.push(frames);
    }

    /// Queues frames to every online session; sessions over their backlog bound are
    /// dropped from the group (they were told to close with 4008).
    fn push(&mut self, frames: Arc<[ByteString]>) {
        self.push_to(frames, |_| true);
    }

    /// Queues frames to the online sessions `chosen` picks, dropping the slow ones.
    fn push_to(&mut self, frames: Arc<[ByteString]>, chosen: impl Fn(&SessionId) -> bool) {
        let mut slow = Vec::new();
        let watching = &mut self.watching;
        self.online.retain(|id, session| {
            let keeps_up = !chosen(id) || session.push(&frames);
            if !keeps_up {
                slow.push(session.uid);
                watching.remove(id);
            }
            keeps_up
        });
        let metrics = metrics::global();
        metrics
            .deliveries
            .inc_by((frames.len() * self.online.len()) as u64);
        if !slow.is_empty() {
            metrics.slow_consumers_closed.inc_by(slow.len() as u64);
            tracing::info!(dropped = slow.len(), "closed slow sessions (4008)");
            self.sessions_went(slow);
        }
    }

    /// Stops the sessions of `uid` receiving the group, telling each.
    fn drop_sessions_of(&mut self, uid: u64) {
        let gid = self.gid;
        let mut went = Vec::new();
        let watching = &mut self.watching;
        self.online.retain(|id, session| {
            let stays = session.uid != uid;
            if !stays {
                session.inbox.do_send(ToSession::Left { gid });
                went.push(uid);
                watching.remove(id);
            }
            stays
        });
        self.sessions_went(went);
    }

    /// Reads from PostgreSQL, once the grace has passed, the msgids known committed but not
    /// pushed; one read at a time, at most a batch of them per read.
    fn fill_gaps(&mut self, ctx: &mut Context<Self>) {
        if self.filling || self.in_order.gap(self.max_gap()).is_none() {
            return;
        }
        self.filling = true;
        ctx.run_later(GAP_GRACE, |act, ctx| act.read_gap(ctx));
    }

    fn max_gap(&self) -> u64 {
        self.settings.max_batch as u64
    }

    fn read_gap(&mut self, ctx: &mut Context<Self>) {
        let Some((after, before)) = self.in_order.gap(self.max_gap()) else {
            self.filling = false;
            return;
        };
        let (store, gid) = (self.store.clone(), self.gid);
        let reading = async move { store.messages_between(gid, after, before).await };
        ctx.spawn(reading.instrument(self.span.clone()).into_actor(self).map(
            move |read, act, ctx| {
                let _span = act.in_span();
                act.filling = false;
                match read {
                    Ok(msgs) if msgs.is_empty() => act.in_order.nothing_stored_above_pushed(),
                    Ok(msgs) => {
                        let metrics = &metrics::global().cluster;
                        metrics.gaps_filled.inc();
                        metrics.gap_messages_filled.inc_by(msgs.len() as u64);
                        tracing::debug!(after, before, read = msgs.len(), "gap filled");
                        let ready = act.in_order.admit(msgs);
                        act.push_messages(&ready);
                        act.fill_gaps(ctx);
                    }
                    // Tried again at the next position check or news of the group.
                    Err(error) => tracing::warn!(%error, after, before, "cannot fill a gap"),
                }
            },
        ));
    }

    /// Whether the group is small enough for presence.
    fn has_presence(&self) -> bool {
        self.acks.len() <= self.settings.presence_max_group
    }

    /// A session of `uid` came online here.
    fn session_came(&mut self, uid: u64) {
        if self.presence.session_joined(uid) {
            self.tell_presence(uid, true);
        }
        self.announce_presence();
    }

    /// Sessions of these members went (each uid once per session).
    fn sessions_went(&mut self, uids: Vec<u64>) {
        for uid in uids {
            if self.presence.session_left(uid) {
                self.tell_presence(uid, false);
            }
        }
    }

    /// Tells the other nodes that `uid` came online here, or went.
    fn tell_presence(&self, uid: u64, online: bool) {
        if let Some(bus) = self.settings.bus.as_ref().filter(|_| self.has_presence()) {
            bus.tell_group(self.gid, &GroupNews::Presence { uid, online });
        }
    }

    /// Tells the online sessions who came and who went (departures after the debounce).
    fn announce_presence(&mut self) {
        if !self.has_presence() {
            return;
        }
        let now = Instant::now();
        self.presence.forget_silent(now, PRESENCE_SILENCE);
        let told = self
            .presence
            .announcements(now, self.settings.presence_debounce);
        if told.is_empty() {
            return;
        }
        let frames = told
            .into_iter()
            .map(|(uid, online)| {
                let frame = ServerFrame::Presence {
                    gid: self.gid,
                    uid,
                    online,
                };
                frame.encode().into()
            })
            .collect();
        let watching = std::mem::take(&mut self.watching);
        self.push_to(frames, |id| watching.contains(id));
        self.watching = watching
            .into_iter()
            .filter(|id| self.online.contains_key(id))
            .collect();
    }

    /// Tells the other nodes everyone online here.
    fn tell_online_here(&self) {
        if let Some(bus) = self.settings.bus.as_ref().filter(|_| self.has_presence()) {
            let uids = self.presence.here();
            bus.tell_group(self.gid, &GroupNews::Online { uids });
        }
    }

    /// Follows the group's subject on the bus, then asks who is online elsewhere and where
    /// storage stands (commits between the load and the subscription have no copy here).
    fn follow(&mut self, bus: Bus, ctx: &mut Context<Self>) {
        let gid = self.gid;
        let following = async move { bus.follow_group(gid).await };
        ctx.spawn(following.into_actor(self).map(|followed, act, ctx| {
            let _span = act.in_span();
            match followed {
                Ok(news) => {
                    ctx.add_stream(news);
                    if let Some(bus) = act.settings.bus.as_ref().filter(|_| act.has_presence()) {
                        bus.tell_group(act.gid, &GroupNews::WhoIsOnline);
                    }
                    act.check_position(ctx);
                }
                Err(error) => tracing::warn!(%error, "cannot follow the group on NATS"),
            }
        }));
    }

    /// Reads the group's newest stored msgid, and fills what is missing below it.
    fn check_position(&mut self, ctx: &mut Context<Self>) {
        let (store, gid) = (self.store.clone(), self.gid);
        let reading = async move { store.group_latest(gid).await };
        ctx.spawn(
            reading.instrument(self.span.clone()).into_actor(self).map(
                |read, act, ctx| match read {
                    Ok(Some(latest)) => {
                        act.in_order.committed_up_to(latest);
                        act.fill_gaps(ctx);
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "cannot read the group's position"),
                },
            ),
        );
    }

    /// The acks not yet handed to the ack writer, as one batch.
    fn take_unflushed(&mut self) -> WriteAcks {
        let gid = self.gid;
        WriteAcks(
            self.acks
                .take_unflushed()
                .into_iter()
                .map(|(uid, msgid)| AckUpdate { gid, uid, msgid })
                .collect(),
        )
    }

    /// Stops the actor once nobody has been online and nothing has been pending for the
    /// idle period; sessions that died without leaving are forgotten here too.
    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let mut died = Vec::new();
        let watching = &mut self.watching;
        self.online.retain(|id, session| {
            let alive = session.alive();
            if !alive {
                died.push(session.uid);
                watching.remove(id);
            }
            alive
        });
        self.sessions_went(died);
        let idle = self.online.is_empty()
            && self.queue.is_idle()
            && !self.acks.has_unflushed()
            && self.acks_waiting.is_empty();
        match (idle, self.idle_since) {
            (false, _) => self.idle_since = None,
            (true, None) => self.idle_since = Some(Instant::now()),
            (true, Some(since)) if since.elapsed() >= self.settings.idle => ctx.stop(),
            (true, Some(_)) => {}
        }
    }
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::global().groups_active.inc();
        ctx.set_mailbox_capacity(crate::messages::BUSY_ACTOR_MAILBOX);
        let (store, gid) = (self.store.clone(), self.gid);
        // Nothing else is handled until the group is loaded.
        ctx.wait(
            async move { store.group_snapshot(gid).await }
                .instrument(self.span.clone())
                .into_actor(self)
                .map(move |loaded, act, ctx| {
                    let _span = act.in_span();
                    match loaded {
                        Ok(Some(snapshot)) => {
                            act.in_order = InOrder::new(snapshot.latest, HELD_ABOVE_GAP);
                            // Started for a change: that change is yet to be carried out.
                            let applied = match act.replay_from {
                                Some(first) => snapshot.version.min(first.saturating_sub(1)),
                                None => snapshot.version,
                            };
                            act.changes = VersionOrder::new(applied);
                            act.acks = MemberAcks::new(snapshot.members);
                            if let Some(bus) = act.settings.bus.clone() {
                                act.follow(bus, ctx);
                            }
                        }
                        Ok(None) => act.fail(Refusal::GroupMissing { gid }.into(), ctx),
                        Err(error) => {
                            tracing::warn!(%error, "could not load group");
                            act.fail(ApiError::from(error), ctx)
                        }
                    }
                }),
        );
        ctx.run_interval(self.settings.ack_flush, |act, _| {
            if act.acks.has_unflushed() {
                let acks = act.take_unflushed();
                act.links.ack_writer.do_send(acks);
            }
        });
        let check_every = (self.settings.idle / 2).max(Duration::from_millis(100));
        ctx.run_interval(check_every, |act, ctx| act.check_idle(ctx));
        let announce_every = (self.settings.presence_debounce / 4).max(Duration::from_millis(50));
        ctx.run_interval(announce_every, |act, _| act.announce_presence());
        if self.settings.bus.is_some() {
            ctx.run_interval(PRESENCE_REFRESH, |act, _| act.tell_online_here());
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::global().groups_active.dec();
        let here: Vec<u64> = self.online.drain().map(|(_, s)| s.uid).collect();
        self.sessions_went(here);
        if self.acks.has_unflushed() {
            let acks = self.take_unflushed();
            self.links.ack_writer.do_send(acks);
        }
        for pending in self.queue.drain() {
            let _ = pending.reply.send(Err(ApiError::unavailable()));
        }
        self.links.stopped.do_send(GroupStopped {
            gid: self.gid,
            generation: self.generation,
        });
    }
}

impl Handler<Join> for GroupActor {
    type Result = Result<GroupCursor, ApiError>;

    fn handle(&mut self, Join(session): Join, _: &mut Self::Context) -> Self::Result {
        if let Some(refusal) = self.refusal(session.uid) {
            return Err(refusal);
        }
        let last_ack = self
            .acks
            .acked(session.uid)
            .expect("refusal checked membership");
        let uid = session.uid;
        if self.online.insert(session.id, session).is_none() {
            self.session_came(uid);
        }
        Ok(GroupCursor {
            gid: self.gid,
            last_ack,
            latest: self.in_order.pushed(),
        })
    }
}

impl Handler<Leave> for GroupActor {
    type Result = ();

    fn handle(&mut self, Leave(session): Leave, _: &mut Self::Context) {
        self.watching.remove(&session);
        if let Some(gone) = self.online.remove(&session) {
            self.sessions_went(vec![gone.uid]);
        }
    }
}

impl Handler<Submit> for GroupActor {
    type Result = ResponseFuture<Result<Appended, ApiError>>;

    fn handle(&mut self, submit: Submit, ctx: &mut Self::Context) -> Self::Result {
        let _span = self.in_span();
        if let Some(refusal) = self.refusal(submit.uid) {
            return Box::pin(async move { Err(refusal) });
        }
        let (reply, committed) = oneshot::channel();
        let send = PendingSend {
            message: NewMessage {
                sender: submit.uid,
                cmid: submit.cmid,
                body: submit.body,
                ts: now_ms(),
            },
            reply,
        };
        if self.queue.push(send).is_err() {
            return Box::pin(std::future::ready(Err(self.refuse_busy(submit.uid))));
        }
        self.busy = false;
        self.write_next(ctx);
        answer_when_sent(committed)
    }
}

impl GroupActor {
    /// The refusal of a send that found the queue full: the queue is bounded so a flood of
    /// sends cannot grow it, and a busy group says so once per burst.
    fn refuse_busy(&mut self, uid: u64) -> ApiError {
        metrics::global().limited(RequestKind::Send.name(), Limit::GroupBusy.name());
        if !self.busy {
            self.busy = true;
            tracing::warn!(
                uid,
                queued = self.queue.len(),
                "group queue full: refusing sends with rate_limited"
            );
        }
        ApiError::new(ErrorCode::RateLimited, Limit::GroupBusy.explain())
    }

    /// Decides an ack from what the actor knows, or `None` when only storage can tell (it is
    /// above every msgid known here, and the last read of storage is not fresh).
    fn judge_ack(&mut self, uid: u64, msgid: u64) -> Option<Result<(), ApiError>> {
        if let Some(refusal) = self.refusal(uid) {
            return Some(Err(refusal));
        }
        let stored = self
            .stored_latest
            .map(|(stored, read_at)| (stored, read_at.elapsed()));
        match judge_ack(msgid, self.in_order.known(), stored, STORED_LATEST_FRESH) {
            AckVerdict::Record => {
                self.acks.record(uid, msgid);
                Some(Ok(()))
            }
            AckVerdict::Refuse { known } => Some(Err(ApiError::bad_request(format!(
                "msgid {msgid} is above the newest msgid of group {}, {known}",
                self.gid
            )))),
            AckVerdict::AskStorage => None,
        }
    }

    /// Reads the group's newest stored msgid, once for every ack waiting, then decides them.
    fn read_stored_latest(&mut self, ctx: &mut Context<Self>) {
        if self.reading_latest {
            return;
        }
        self.reading_latest = true;
        let (store, gid) = (self.store.clone(), self.gid);
        let reading = async move { store.group_latest(gid).await }.instrument(self.span.clone());
        ctx.spawn(reading.into_actor(self).map(|read, act, _| {
            let _span = act.in_span();
            act.reading_latest = false;
            let failure = match read {
                Ok(latest) => {
                    act.stored_latest = Some((latest.unwrap_or(0), Instant::now()));
                    None
                }
                Err(error) => Some(ApiError::from(error)),
            };
            for waiting in std::mem::take(&mut act.acks_waiting) {
                let outcome = match &failure {
                    Some(error) => Err(error.clone()),
                    None => act
                        .judge_ack(waiting.uid, waiting.msgid)
                        .expect("a fresh read decides every ack"),
                };
                let _ = waiting.reply.send(outcome);
            }
        }));
    }
}

impl Handler<AckUpTo> for GroupActor {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, ack: AckUpTo, ctx: &mut Self::Context) -> Self::Result {
        if let Some(outcome) = self.judge_ack(ack.uid, ack.msgid) {
            return Box::pin(std::future::ready(outcome));
        }
        let (reply, decided) = oneshot::channel();
        self.acks_waiting.push(WaitingAck {
            uid: ack.uid,
            msgid: ack.msgid,
            reply,
        });
        self.read_stored_latest(ctx);
        answer_when_sent(decided)
    }
}

/// The reply a handler gives once the actor sends it on `reply`; `unavailable` if the actor
/// stopped first.
fn answer_when_sent<T: Send + 'static>(
    reply: oneshot::Receiver<Result<T, ApiError>>,
) -> ResponseFuture<Result<T, ApiError>> {
    Box::pin(async move { reply.await.unwrap_or_else(|_| Err(ApiError::unavailable())) })
}

impl Handler<CursorOf> for GroupActor {
    type Result = Option<GroupCursor>;

    fn handle(&mut self, CursorOf(uid): CursorOf, _: &mut Self::Context) -> Self::Result {
        let last_ack = self.acks.acked(uid)?;
        Some(GroupCursor {
            gid: self.gid,
            last_ack,
            latest: self.in_order.pushed(),
        })
    }
}

impl Handler<GroupChange> for GroupActor {
    type Result = ();

    fn handle(&mut self, GroupChange(steps): GroupChange, ctx: &mut Self::Context) {
        let _span = self.in_span();
        if self.failed.is_some() {
            return;
        }
        let versions = steps.iter().filter_map(|step| match step {
            GroupStep::Event { version, .. } => Some(*version),
            _ => None,
        });
        let (first, last) = (versions.clone().min(), versions.max());
        let (Some(first), Some(last)) = (first, last) else {
            // Notices of versions that are not events (profiles): no order to keep.
            self.carry_out(InTurn::Next(steps), ctx);
            return;
        };
        for change in self.changes.offer(first, last, steps) {
            self.carry_out(change, ctx);
        }
        self.repair_events(ctx);
    }
}

impl GroupActor {
    /// Carries out a change in its turn; of a stale one (its versions were covered by the
    /// state loaded, or read from the log), only what cannot be out of date: the sessions of
    /// members who are members now start receiving, and notices go out.
    fn carry_out(&mut self, change: InTurn<Vec<GroupStep>>, ctx: &mut Context<Self>) {
        if self.failed.is_some() {
            return;
        }
        let (steps, stale) = match change {
            InTurn::Next(steps) => (steps, false),
            InTurn::Stale(steps) => (steps, true),
        };
        for step in steps {
            match step {
                GroupStep::Join { uid, sessions } => {
                    if stale && !self.acks.is_member(uid) {
                        continue;
                    }
                    self.acks.join(uid, self.in_order.pushed());
                    for session in sessions {
                        session.inbox.do_send(ToSession::Joined {
                            gid: self.gid,
                            group: GroupActor::handle(&ctx.address()),
                        });
                        if self.online.insert(session.id, session).is_none() {
                            self.session_came(uid);
                        }
                    }
                }
                GroupStep::Notify(versions) => {
                    let notice = Arc::new(SyncNotice::group(versions));
                    for session in self.online.values() {
                        session.inbox.do_send(ToSession::Notify(notice.clone()));
                    }
                }
                _ if stale => {}
                GroupStep::Event { frame, .. } => self.push(Arc::from([frame])),
                GroupStep::Leave(uid) => {
                    self.acks.leave(uid);
                    self.drop_sessions_of(uid);
                }
                GroupStep::Disband => {
                    let uids: Vec<u64> = self.acks.members().collect();
                    for uid in uids {
                        self.drop_sessions_of(uid);
                    }
                    self.acks.clear();
                    let gone = Refusal::GroupMissing { gid: self.gid }.into();
                    self.fail(gone, ctx);
                    return;
                }
            }
        }
    }

    /// Reads from the event log, once the grace has passed, the versions missing before a
    /// change held or below a version a position check found; carries them out as their
    /// effects would have been, then what was held.
    fn repair_events(&mut self, ctx: &mut Context<Self>) {
        if self.repairing || self.changes.gap().is_none() {
            return;
        }
        self.repairing = true;
        ctx.run_later(EVENT_GRACE, |act, ctx| act.read_events(ctx));
    }

    fn read_events(&mut self, ctx: &mut Context<Self>) {
        let Some((after, before)) = self.changes.gap() else {
            self.repairing = false;
            return;
        };
        let (store, gid, sessions) = (self.store.clone(), self.gid, self.links.sessions.clone());
        let reading = async move {
            let events = store.events_between(gid, after, before).await?;
            let arrivals: Vec<u64> = events.iter().filter_map(arrival).collect();
            // The directory stops only with the system; then nobody is online to attach.
            let online = match arrivals.is_empty() {
                true => Vec::new(),
                false => sessions
                    .send(SessionsOf(arrivals))
                    .await
                    .unwrap_or_default(),
            };
            Ok::<_, StoreError>((events, online))
        };
        ctx.spawn(reading.instrument(self.span.clone()).into_actor(self).map(
            move |read, act, ctx| {
                let _span = act.in_span();
                act.repairing = false;
                let (events, online) = match read {
                    Ok(read) => read,
                    Err(error) => {
                        // Tried again at the next change or position check.
                        tracing::warn!(%error, after, before, "cannot read missing events");
                        return;
                    }
                };
                let full_page = events.len() >= 1000;
                let done = match events.last() {
                    Some(last) if full_page => last.version,
                    // Whatever the log no longer holds is gone for good: clients sync.
                    _ => before - 1,
                };
                tracing::debug!(after, before, read = events.len(), "events repaired");
                act.carry_out(InTurn::Next(repaired_steps(events, online)), ctx);
                for change in act.changes.done_up_to(done) {
                    act.carry_out(change, ctx);
                }
                act.repair_events(ctx);
            },
        ));
    }
}

/// The member an event brings, if it brings one.
fn arrival(event: &LoggedEvent) -> Option<u64> {
    match event.event {
        GroupEvent::MemberAdded { uid, .. } => Some(uid),
        _ => None,
    }
}

/// Events read from the log as the steps their change's effects would have made; `online`
/// are the sessions here of the members they bring.
fn repaired_steps(events: Vec<LoggedEvent>, online: Vec<SessionHandle>) -> Vec<GroupStep> {
    let mut steps = Vec::with_capacity(events.len() * 2);
    for event in events {
        let frame = ServerFrame::Event(&event).encode().into();
        steps.push(GroupStep::Event {
            version: event.version,
            frame,
        });
        match event.event {
            GroupEvent::MemberAdded { uid, .. } => steps.push(GroupStep::Join {
                uid,
                sessions: online.iter().filter(|s| s.uid == uid).cloned().collect(),
            }),
            GroupEvent::MemberRemoved { uid, .. } => steps.push(GroupStep::Leave(uid)),
            GroupEvent::GroupDisbanded { .. } => steps.push(GroupStep::Disband),
            _ => {}
        }
    }
    steps
}

impl Handler<FlushAcks> for GroupActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushAcks, _: &mut Self::Context) -> Self::Result {
        let acks = self.take_unflushed();
        let written = self.links.ack_writer.send(acks);
        Box::pin(async move {
            let _ = written.await;
        })
    }
}

impl Handler<Position> for GroupActor {
    type Result = ();

    fn handle(&mut self, position: Position, ctx: &mut Self::Context) {
        self.in_order.committed_up_to(position.latest);
        self.fill_gaps(ctx);
        self.changes.exists_up_to(position.version);
        self.repair_events(ctx);
    }
}

impl Handler<NodeGone> for GroupActor {
    type Result = ();

    fn handle(&mut self, NodeGone(node): NodeGone, _: &mut Self::Context) {
        self.presence.node_gone(&node);
    }
}

impl Handler<OnlineIn> for GroupActor {
    type Result = ResponseActFuture<Self, Result<Vec<u64>, ApiError>>;

    fn handle(&mut self, asked: OnlineIn, _: &mut Self::Context) -> Self::Result {
        let OnlineIn { uid, session } = asked;
        // A group just started has not heard the other nodes yet.
        let settle = match &self.settings.bus {
            Some(_) => PRESENCE_SETTLE.saturating_sub(self.started.elapsed()),
            None => Duration::ZERO,
        };
        let answer = actix::clock::sleep(settle)
            .into_actor(self)
            .map(move |(), act, _| {
                if let Some(refusal) = act.refusal(uid) {
                    return Err(refusal);
                }
                if !act.has_presence() {
                    return Err(ApiError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "group {} has more than {} members: presence is off for it",
                            act.gid, act.settings.presence_max_group
                        ),
                    ));
                }
                if let Some(session) = session.filter(|id| act.online.contains_key(id)) {
                    act.watching.insert(session);
                }
                Ok(act.presence.online())
            });
        Box::pin(answer)
    }
}

/// News of the group from the other nodes.
impl StreamHandler<Heard<GroupNews>> for GroupActor {
    fn handle(&mut self, heard: Heard<GroupNews>, ctx: &mut Self::Context) {
        let _span = self.in_span();
        metrics::global().cluster.received(heard.news.kind());
        if self.failed.is_some() {
            return;
        }
        match heard.news {
            GroupNews::Messages(msgs) => {
                let ready = self.in_order.admit(msgs);
                self.push_messages(&ready);
                self.fill_gaps(ctx);
            }
            GroupNews::Committed { latest } => {
                self.in_order.committed_up_to(latest);
                self.fill_gaps(ctx);
            }
            GroupNews::Presence { uid, online } if self.acks.is_member(uid) => {
                self.presence.heard(heard.from, uid, online, Instant::now());
                self.announce_presence();
            }
            GroupNews::Online { mut uids } => {
                uids.retain(|uid| self.acks.is_member(*uid));
                self.presence.heard_all(heard.from, uids, Instant::now());
                self.announce_presence();
            }
            GroupNews::WhoIsOnline => self.tell_online_here(),
            GroupNews::Presence { .. } => {}
        }
    }

    /// The bus closes the subscription only when the node stops; the group carries on.
    fn finished(&mut self, _: &mut Self::Context) {}
}
