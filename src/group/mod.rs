//! The group actor: one per active group. It knows the members and which of their
//! sessions are online, commits sends in batches (group commit), fans each committed
//! message out once to every online session, and coalesces the members' acks.
//!
//! The group never waits on a session: pushes are pre-serialised frames queued with
//! `do_send`, bounded by each session's outbox. In a cluster the group follows its subject
//! on the bus while it runs: it publishes what it commits, pushes what other nodes commit,
//! and reads from PostgreSQL whatever msgid it sees missing, so pushes stay dense on every
//! node. It also keeps who of its members is online, and tells of their coming and going.
//!
//! - this module: the actor, its requests (join, leave, send, ack, cursor, flush), group
//!   commit and fan-out;
//! - `changes`: membership, events and notices, in the order of the group's versions;
//! - `news`: what other nodes tell over the bus, and the gaps read from PostgreSQL;
//! - `presence`: who is online, and the telling of arrivals and departures;
//! - `policy`: the decisions, as plain state and functions.

mod changes;
mod news;
mod policy;
mod presence;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::oneshot;
use tracing::Instrument;

use self::policy::{
    judge_ack, AckVerdict, CommitQueue, InOrder, MemberAcks, Presence, VersionOrder,
};
use crate::budget::{Limit, RequestKind};
use crate::cluster::wire::GroupNews;
use crate::cluster::Bus;
use crate::error::{ApiError, ErrorCode};
use crate::messages::{
    AckUpTo, Author, CursorOf, FlushAcks, GroupHandle, GroupInbox, GroupStep, GroupStopped, Join,
    Leave, ReadsOf, SessionHandle, SessionId, SessionsOf, Submit, ToSession, WriteAcks,
};
use crate::metrics;
use crate::model::refusal::Refusal;
use crate::model::{now_ms, GroupCursor, Mark, Marks, MessageView, ReadPosition};
use crate::protocol::ServerFrame;
use crate::store::{AckUpdate, AppendOutcome, Appended, NewMessage, Store, StoreError};

/// Messages held above a gap while it is read; past it, the newest are read again later.
const HELD_ABOVE_GAP: usize = 10_000;

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
    /// Whether commits tell the webhook who of the members was offline.
    pub webhooks: bool,
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
    mark: Mark,
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
    /// Read positions that moved since they were last told to the group.
    reads_moved: HashMap<u64, u64>,
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
            reads_moved: HashMap::new(),
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
            signal: group.clone().recipient(),
            reads: group.clone().recipient(),
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
        let offline = self.offline_members();
        let commit = async move {
            let outcome = store.append(gid, &messages, offline.as_deref()).await;
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

    /// The members with no session online anywhere, for the webhook of the messages about to
    /// be stored (the hook for mobile push). `None` without webhooks, and in a cluster for
    /// groups too big for presence, where the other nodes do not tell who is online there.
    fn offline_members(&self) -> Option<Vec<u64>> {
        let known = self.settings.bus.is_none() || self.has_presence();
        (self.settings.webhooks && known).then(|| {
            self.acks
                .members()
                .filter(|uid| !self.presence.is_online(*uid))
                .collect()
        })
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
                    // As stored: raised to keep ts growing with msgid (append.sql).
                    ts: result.ts,
                    cmid: message.cmid,
                    body: Some(message.body),
                    tombstone: None,
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

    /// A member's cursor: their marks, and where pushes stand (what a joining session pulls
    /// up to).
    fn cursor(&self, marks: Marks) -> GroupCursor {
        GroupCursor {
            gid: self.gid,
            last_ack: marks.received,
            last_read: marks.read,
            latest: self.in_order.pushed(),
        }
    }

    /// Tells the group the read positions that moved since last time: the online sessions
    /// here, and the other nodes, in one frame and one message per flush interval.
    fn tell_reads(&mut self) {
        if self.reads_moved.is_empty() {
            return;
        }
        let mut reads: Vec<ReadPosition> = self
            .reads_moved
            .drain()
            .map(|(uid, msgid)| ReadPosition { uid, msgid })
            .collect();
        reads.sort_unstable_by_key(|read| read.uid);
        if let Some(bus) = &self.settings.bus {
            bus.tell_group(self.gid, &GroupNews::Reads(reads.clone()));
        }
        self.push_reads(&reads);
    }

    /// Pushes read positions to the online sessions, in groups small enough for presence.
    fn push_reads(&mut self, reads: &[ReadPosition]) {
        if reads.is_empty() || !self.has_presence() {
            return;
        }
        let gid = self.gid;
        let frame = ServerFrame::Reads { gid, reads }.encode().into();
        self.push(Arc::from([frame]));
    }

    /// The acks not yet handed to the ack writer, as one batch.
    fn take_unflushed(&mut self) -> WriteAcks {
        let gid = self.gid;
        WriteAcks(
            self.acks
                .take_unflushed()
                .into_iter()
                .map(|(uid, mark, msgid)| AckUpdate {
                    mark,
                    gid,
                    uid,
                    msgid,
                })
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
            act.tell_reads();
        });
        let check_every = (self.settings.idle / 2).max(Duration::from_millis(100));
        ctx.run_interval(check_every, |act, ctx| act.check_idle(ctx));
        self.keep_presence(ctx);
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

    fn handle(&mut self, join: Join, ctx: &mut Self::Context) -> Self::Result {
        let Join {
            session,
            stored_latest,
        } = join;
        if let Some(refusal) = self.refusal(session.uid) {
            return Err(refusal);
        }
        let marks = self
            .acks
            .marks(session.uid)
            .expect("refusal checked membership");
        let uid = session.uid;
        if self.online.insert(session.id, session).is_none() {
            self.session_came(uid);
        }
        self.in_order.committed_up_to(stored_latest);
        self.fill_gaps(ctx);
        Ok(self.cursor(marks))
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
        let refusal = match submit.author {
            Author::Member(uid) => self.refusal(uid),
            Author::System => self.failed.clone(),
        };
        if let Some(refusal) = refusal {
            return Box::pin(async move { Err(refusal) });
        }
        let (reply, committed) = oneshot::channel();
        let send = PendingSend {
            message: NewMessage {
                sender: submit.author.uid(),
                cmid: submit.cmid,
                body: submit.body,
                ts: now_ms(),
            },
            reply,
        };
        if self.queue.push(send).is_err() {
            return Box::pin(std::future::ready(Err(self.refuse_busy(submit.author))));
        }
        self.busy = false;
        self.write_next(ctx);
        answer_when_sent(committed)
    }
}

impl GroupActor {
    /// The refusal of a send that found the queue full: the queue is bounded so a flood of
    /// sends cannot grow it, and a busy group says so once per burst.
    fn refuse_busy(&mut self, author: Author) -> ApiError {
        metrics::global().limited(RequestKind::Send.name(), Limit::GroupBusy.name());
        if !self.busy {
            self.busy = true;
            tracing::warn!(
                uid = author.uid(),
                queued = self.queue.len(),
                "group queue full: refusing sends with rate_limited"
            );
        }
        ApiError::new(ErrorCode::RateLimited, Limit::GroupBusy.explain())
    }

    /// Decides an ack from what the actor knows, or `None` when only storage can tell (it is
    /// above every msgid known here, and the last read of storage is not fresh).
    fn judge_ack(&mut self, uid: u64, msgid: u64, mark: Mark) -> Option<Result<(), ApiError>> {
        if let Some(refusal) = self.refusal(uid) {
            return Some(Err(refusal));
        }
        let stored = self
            .stored_latest
            .map(|(stored, read_at)| (stored, read_at.elapsed()));
        match judge_ack(msgid, self.in_order.known(), stored, STORED_LATEST_FRESH) {
            AckVerdict::Record => {
                if self.acks.record(uid, mark, msgid) && mark == Mark::Read {
                    self.reads_moved.insert(uid, msgid);
                }
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
                        .judge_ack(waiting.uid, waiting.msgid, waiting.mark)
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
        if let Some(outcome) = self.judge_ack(ack.uid, ack.msgid, ack.mark) {
            return Box::pin(std::future::ready(outcome));
        }
        let (reply, decided) = oneshot::channel();
        self.acks_waiting.push(WaitingAck {
            uid: ack.uid,
            msgid: ack.msgid,
            mark: ack.mark,
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
        self.acks.marks(uid).map(|marks| self.cursor(marks))
    }
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

impl Handler<ReadsOf> for GroupActor {
    type Result = Result<Vec<ReadPosition>, ApiError>;

    fn handle(&mut self, ReadsOf { uid }: ReadsOf, _: &mut Self::Context) -> Self::Result {
        if let Some(refusal) = self.refusal(uid) {
            return Err(refusal);
        }
        let mut reads: Vec<ReadPosition> = self
            .acks
            .all()
            .map(|(uid, marks)| ReadPosition {
                uid,
                msgid: marks.read,
            })
            .collect();
        reads.sort_unstable_by_key(|read| read.uid);
        Ok(reads)
    }
}
