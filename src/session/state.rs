//! The per-client state machine: admission, `hello`, the dispatch of client requests and
//! what each may cost, in-flight bookkeeping, ack coalescing, bad-frame counting, liveness.
//!
//! Plain Rust: it is handed whole text messages and the gateway's [`ToSession`] messages,
//! and tells its [`Connection`] what to do — write this frame, close with this code, run
//! this work. Work runs outside the state machine, and what it came to is handed back as an
//! [`Outcome`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::future::{try_join_all, BoxFuture, LocalBoxFuture};
use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{Outbox, SessionContext};
use crate::auth::Identity;
use crate::budget::{Limit, RefusalCount, Refusals, RequestKind, SessionBudget};
use crate::close::Close;
use crate::error::{ApiError, ErrorCode};
use crate::messages::{
    AckUpTo, Author, GroupHandle, GroupRequest, Join, Leave, OnlineIn, Relay, SessionHandle,
    SessionId, Submit, ToSession,
};
use crate::metrics;
use crate::model::refusal::Refusal;
use crate::model::sync::{SyncNotice, SyncReply, SyncRequest};
use crate::model::{GroupCursor, Mark};
use crate::protocol::{self, ClientRequest, RequestId, ServerFrame, SignalKind};
use crate::registry::directory::{ask_group, Connect, Directory, Disconnect, GroupFor};
use crate::store::{Appended, Membership, Page, Store};

/// Bad frames in a row after which the session is closed with 1008. Requests refused for
/// the client's own fault (a non-member's send, an ack above the newest msgid) count too.
const MAX_BAD_FRAMES_IN_A_ROW: u32 = 10;

/// Pulls and syncs of one session that run at once; the others wait their turn, so one
/// session holds at most this many PostgreSQL connections.
const READS_AT_ONCE: usize = 2;

/// How long a session gathers sync notices into one `sync_notify`.
const NOTIFY_WINDOW: Duration = Duration::from_millis(50);

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A session's id as clients see it (in `hello`) and as the logs show it; written without
/// an allocation, as every client frame's span names it.
struct SessionName(SessionId);

impl std::fmt::Display for SessionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s-{:x}", self.0)
    }
}

/// What the state machine asks of the session's actor and socket. Each call is carried out
/// at once, in the order made.
pub trait Connection {
    /// Where the rest of the gateway sends to this session.
    fn inbox(&self) -> Recipient<ToSession>;
    /// Writes a text frame.
    fn write(&mut self, frame: ByteString);
    /// Pings the peer.
    fn ping(&mut self);
    /// Writes a close frame, then stops the session.
    fn close(&mut self, close: Close);
    /// Stops the session without a close frame: the peer is gone.
    fn drop_peer(&mut self);
    /// Runs `work` while frames and messages go on being handled; its outcome comes back to
    /// [`SessionState::on_outcome`].
    fn spawn(&mut self, work: Work);
    /// Runs `work` first: frames and messages wait until its outcome has been handled.
    fn wait(&mut self, work: Work);
    /// Hands `outcome` back to [`SessionState::on_outcome`] after `delay`.
    fn after(&mut self, delay: Duration, outcome: Outcome);
}

/// Work a session runs beside its state: asks to the directory and groups, storage reads.
pub type Work = LocalBoxFuture<'static, Outcome>;

/// What a piece of work came to.
pub enum Outcome {
    /// The directory admitted the session, or said how to close it.
    Admitted(Result<(), Close>),
    /// The groups the session joined as it opened, each with the member's cursor.
    Joined(Result<Vec<(GroupCursor, GroupHandle)>, ApiError>),
    /// A send's commit.
    Sent {
        id: Option<RequestId>,
        gid: u64,
        sent: Result<Appended, ApiError>,
    },
    /// The group's answer to the ack of `gid` that was on its way.
    Acked {
        gid: u64,
        outcome: Result<(), ApiError>,
    },
    /// A pull's page.
    Pulled {
        id: Option<RequestId>,
        gid: u64,
        page: Result<Page, ApiError>,
    },
    /// A sync's reply (boxed: it is many times the size of the other outcomes).
    Synced {
        id: Option<RequestId>,
        reply: Result<Box<SyncReply>, ApiError>,
    },
    /// A request answered only if it was refused (a signal, a read position).
    Quiet {
        id: Option<RequestId>,
        outcome: Result<(), ApiError>,
    },
    /// Who of a group is online.
    Online {
        id: Option<RequestId>,
        gid: u64,
        uids: Result<Vec<u64>, ApiError>,
    },
    /// A recall's outcome.
    Recalled {
        id: Option<RequestId>,
        gid: u64,
        msgid: u64,
        outcome: Result<(), ApiError>,
    },
    /// The notice window is over: the gathered `sync_notify` is written.
    NoticeDue,
}

/// One client's session, between its frames and the rest of the gateway.
pub struct SessionState {
    id: SessionId,
    identity: Identity,
    shared: Arc<SessionContext>,
    /// Group actors this session is online in, to send to without asking the directory.
    groups: HashMap<u64, GroupHandle>,
    outbox: Arc<Outbox>,
    last_heard: Instant,
    budget: SessionBudget,
    /// Requests waiting for their replies: sends, pulls, syncs, acks on their way.
    in_flight: usize,
    /// Requests refused `rate_limited` lately.
    refusals: Refusals,
    /// Bad frames and refusals of the client's fault since the last request that succeeded.
    bad_frames: u32,
    /// Each group's acks: only the highest is kept, and one is on its way at a time.
    acks: HashMap<u64, AckState>,
    /// Turns for pulls and syncs (`READS_AT_ONCE`), made at the first one.
    reads: Option<Arc<Semaphore>>,
    /// A `sync_notify` gathering notices until it is written.
    notice: Option<Box<SyncNotice>>,
}

impl SessionState {
    pub fn new(identity: Identity, shared: Arc<SessionContext>) -> Self {
        let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        SessionState {
            id,
            identity,
            outbox: Arc::new(Outbox::new(shared.limits.outbound_queue)),
            shared,
            groups: HashMap::new(),
            last_heard: Instant::now(),
            budget: SessionBudget::default(),
            in_flight: 0,
            refusals: Refusals::default(),
            bad_frames: 0,
            acks: HashMap::new(),
            reads: None,
            notice: None,
        }
    }

    /// A span carrying `session` and `uid`, for the glue to enter while the session handles
    /// what its client sent. Made afresh each time rather than kept: a span the session held
    /// would cost it ~1.7 KiB for its whole life.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!("session", session = %SessionName(self.id), uid = self.uid())
    }

    /// Work a request of the client started, run in the span of that request.
    fn work(&self, work: impl Future<Output = Outcome> + 'static) -> Work {
        Box::pin(work.in_current_span())
    }

    /// The session's id as clients see it.
    pub fn name(&self) -> String {
        SessionName(self.id).to_string()
    }

    /// The session opened: it asks the directory to admit it within the caps. Heartbeats and
    /// token expiry are driven by the registry's ticker for every session at once, rather than
    /// by two timers per session polled at each of its wake-ups. Frames wait until it is
    /// admitted.
    pub fn start(&mut self, conn: &mut impl Connection) {
        metrics::global().sessions.inc();
        let admitting = self.shared.directory.send(Connect {
            session: self.session_handle(conn),
            token_exp: self.identity.valid_until,
        });
        // `map`, not an `async` block awaiting `admitting`: such a block holds the future it
        // awaits twice over, and the connect path's futures are boxed per session.
        conn.wait(Box::pin(admitting.map(|admitted| {
            Outcome::Admitted(admitted.unwrap_or(Err(Close::STOPPING)))
        })));
    }

    /// Something was heard from the peer: it is alive.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// A whole text message from the client.
    pub fn on_text(&mut self, text: &str, conn: &mut impl Connection) {
        if let Err(bad) = protocol::check_depth(text, self.shared.limits.max_json_depth) {
            return self.bad_frame(bad.id, &bad.error, conn);
        }
        match protocol::decode(text, self.shared.limits.max_body_bytes) {
            Ok((id, request)) => self.dispatch(id, request, conn),
            Err(bad) => self.bad_frame(bad.id, &bad.error, conn),
        }
    }

    /// A binary message from the client: refused, the protocol is JSON text.
    pub fn on_binary(&mut self, conn: &mut impl Connection) {
        let error = ApiError::bad_request("binary frames are not supported; send JSON text");
        self.bad_frame(None, &error, conn);
    }

    /// What the rest of the gateway sends the session.
    pub fn on_message(&mut self, message: ToSession, conn: &mut impl Connection) {
        match message {
            ToSession::Frames(frames) => {
                for frame in self.outbox.take(&frames) {
                    conn.write(frame.clone());
                }
            }
            ToSession::Joined { gid, group } => {
                self.groups.insert(gid, group);
            }
            ToSession::Left { gid } => {
                self.groups.remove(&gid);
            }
            ToSession::Notify(notice) => self.notify(&notice, conn),
            ToSession::Close(close) => conn.close(close),
            ToSession::Heartbeat => {
                if self.last_heard.elapsed() > self.shared.limits.heartbeat * 2 {
                    tracing::debug!(session = %SessionName(self.id), uid = self.uid(),
                        "peer silent for two heartbeats; dropping");
                    conn.drop_peer();
                } else {
                    conn.ping();
                }
            }
        }
    }

    /// What a piece of work came to.
    pub fn on_outcome(&mut self, outcome: Outcome, conn: &mut impl Connection) {
        match outcome {
            Outcome::Admitted(Ok(())) => self.greet(conn),
            Outcome::Admitted(Err(close)) => conn.close(close),
            Outcome::Joined(joined) => self.joined(joined, conn),
            Outcome::Sent { id, gid, sent } => self.sent(id, gid, sent, conn),
            Outcome::Acked { gid, outcome } => self.acked(gid, outcome, conn),
            Outcome::Pulled { id, gid, page } => self.pulled(id, gid, page, conn),
            Outcome::Synced { id, reply } => self.synced(id, reply, conn),
            Outcome::Quiet { id, outcome } => {
                self.in_flight -= 1;
                if let Err(refused) = outcome {
                    self.answer(id, Err(refused), conn);
                }
            }
            Outcome::Online { id, gid, uids } => {
                self.in_flight -= 1;
                let reply = uids.as_deref().map(|uids| ServerFrame::Online {
                    id: id.clone(),
                    gid,
                    uids,
                });
                self.answer(id, reply.map_err(Clone::clone), conn);
            }
            Outcome::Recalled {
                id,
                gid,
                msgid,
                outcome,
            } => {
                self.in_flight -= 1;
                let reply = outcome.map(|()| ServerFrame::Recalled {
                    id: id.clone(),
                    gid,
                    msgid,
                });
                self.answer(id, reply, conn);
            }
            Outcome::NoticeDue => {
                if let Some(notice) = self.notice.take() {
                    self.write(ServerFrame::SyncNotify(&notice), conn);
                }
            }
        }
    }

    /// The session stopped: it leaves the directory and its groups.
    pub fn stopped(&mut self) {
        metrics::global().sessions.dec();
        self.shared.directory.do_send(Disconnect {
            uid: self.uid(),
            id: self.id,
        });
        // An ack followed at once by a close still counts: the highest not yet answered goes
        // to its group with `do_send`, which actix delivers although nobody awaits a reply
        // (acks are cumulative, so one that also arrives on its way changes nothing).
        for (gid, group) in &self.groups {
            if let Some(msgid) = self.acks.get(gid).and_then(AckState::unanswered) {
                group.tell(AckUpTo {
                    uid: self.uid(),
                    msgid,
                    mark: Mark::Received,
                });
            }
            group.tell(Leave(self.id));
        }
    }

    fn uid(&self) -> u64 {
        self.identity.uid
    }

    fn session_handle(&self, conn: &impl Connection) -> SessionHandle {
        SessionHandle {
            id: self.id,
            uid: self.uid(),
            inbox: conn.inbox(),
            outbox: self.outbox.clone(),
        }
    }

    fn write(&self, frame: ServerFrame, conn: &mut impl Connection) {
        conn.write(frame.encode().into());
    }

    fn write_error(&self, id: Option<RequestId>, error: &ApiError, conn: &mut impl Connection) {
        metrics::global().error(error.code);
        let frame = ServerFrame::Error {
            id,
            code: error.code,
            message: &error.message,
        };
        self.write(frame, conn);
    }

    /// Writes a request's reply, or its refusal. A reply means the client is behaving and
    /// resets the count of bad frames; a refusal for the client's own fault adds to it.
    fn answer(
        &mut self,
        id: Option<RequestId>,
        reply: Result<ServerFrame<'_>, ApiError>,
        conn: &mut impl Connection,
    ) {
        match reply {
            Ok(frame) => {
                self.bad_frames = 0;
                self.write(frame, conn);
            }
            Err(error) if error.code.is_clients_fault() => self.bad_frame(id, &error, conn),
            Err(error) => self.write_error(id, &error, conn),
        }
    }

    fn bad_frame(&mut self, id: Option<RequestId>, error: &ApiError, conn: &mut impl Connection) {
        self.write_error(id, error, conn);
        self.bad_frames += 1;
        if self.bad_frames == MAX_BAD_FRAMES_IN_A_ROW {
            tracing::info!(last = %error,
                "bad frames in a row: closing with 1008");
            conn.close(Close::BAD_FRAMES);
        }
    }

    /// Charges a request to the session's budget. A refusal is answered `rate_limited`,
    /// logged once per burst, and closes the session when the client keeps on.
    fn charge(
        &mut self,
        id: Option<RequestId>,
        kind: RequestKind,
        conn: &mut impl Connection,
    ) -> bool {
        let limits = &self.shared.limits;
        match self.budget.charge(limits.budget, limits.send_rate, kind) {
            Ok(()) => true,
            Err(limit) => {
                self.refuse_limited(id, kind, limit, conn);
                false
            }
        }
    }

    /// Counts a request as waiting for its reply, or refuses it past `max_in_flight`.
    fn begin_in_flight(
        &mut self,
        id: Option<RequestId>,
        kind: RequestKind,
        conn: &mut impl Connection,
    ) -> bool {
        if self.in_flight >= self.shared.limits.max_in_flight {
            self.refuse_limited(id, kind, Limit::InFlight, conn);
            return false;
        }
        self.in_flight += 1;
        true
    }

    fn refuse_limited(
        &mut self,
        id: Option<RequestId>,
        kind: RequestKind,
        limit: Limit,
        conn: &mut impl Connection,
    ) {
        metrics::global().limited(kind.name(), limit.name());
        let refusal = self.refusals.refused(Instant::now());
        if refusal == RefusalCount::First {
            tracing::warn!(
                kind = kind.name(),
                limit = limit.name(),
                "session over its limits: refusing with rate_limited"
            );
        }
        let error = ApiError::new(ErrorCode::RateLimited, limit.explain());
        self.write_error(id, &error, conn);
        if refusal == RefusalCount::TooMany {
            tracing::warn!(
                kind = kind.name(),
                "session kept asking past rate_limited: closing with 1008"
            );
            conn.close(Close::PAST_RATE_LIMITED);
        }
    }

    /// The session's turns to read from storage: a pull or sync holds one while it runs.
    fn read_turn(&mut self) -> Arc<Semaphore> {
        self.reads
            .get_or_insert_with(|| Arc::new(Semaphore::new(READS_AT_ONCE)))
            .clone()
    }

    /// Hands `msg` to the group `gid`. When this session is online in the group the message
    /// is queued at once, in the order of the session's requests (pipelined sends are stored
    /// in the order sent); otherwise the directory is asked for the group first.
    fn ask_group<M: GroupRequest>(
        &self,
        gid: u64,
        msg: M,
    ) -> BoxFuture<'static, Result<M::Result, ApiError>> {
        match self.groups.get(&gid) {
            Some(group) => {
                let queued = group.ask(msg);
                Box::pin(async move { Ok(queued.await?) })
            }
            None => {
                let directory = self.shared.directory.clone();
                Box::pin(async move { ask_group(&directory, gid, msg).await })
            }
        }
    }

    /// Registers with every group of the user; `hello` follows once it has.
    fn greet(&mut self, conn: &mut impl Connection) {
        let (store, directory) = (self.shared.store.clone(), self.shared.directory.clone());
        let joining = join_groups(store, directory, self.session_handle(conn));
        // `map` keeps one copy of `joining` (~2 KiB); `async move { joining.await }` kept two,
        // which a connect burst left in the heap at ~0.4 KiB per idle session.
        conn.wait(Box::pin(joining.map(Outcome::Joined)));
    }

    /// Greets the client with its cursors, or closes when its groups could not be joined.
    fn joined(
        &mut self,
        joined: Result<Vec<(GroupCursor, GroupHandle)>, ApiError>,
        conn: &mut impl Connection,
    ) {
        match joined {
            Ok(joined) => {
                let cursors: Vec<GroupCursor> = joined.iter().map(|(c, _)| *c).collect();
                self.groups = joined.into_iter().map(|(c, g)| (c.gid, g)).collect();
                let hello = ServerFrame::Hello {
                    uid: self.uid(),
                    session: &self.name(),
                    heartbeat_s: self.shared.limits.heartbeat.as_secs(),
                    groups: &cursors,
                };
                self.write(hello, conn);
            }
            Err(error) => {
                tracing::warn!(%error, "session could not join its groups");
                conn.close(Close::STORAGE_UNAVAILABLE);
            }
        }
    }

    fn dispatch(
        &mut self,
        id: Option<RequestId>,
        request: ClientRequest,
        conn: &mut impl Connection,
    ) {
        let kind = kind_of(&request);
        if !self.charge(id.clone(), kind, conn) {
            return;
        }
        match request {
            ClientRequest::Ping => {
                let pong = ServerFrame::Pong { id: id.clone() };
                self.answer(id, Ok(pong), conn);
            }
            ClientRequest::Send { gid, cmid, body } => self.send(id, gid, cmid, body, conn),
            ClientRequest::Ack { gid, msgid } => self.ack(id, gid, msgid, conn),
            ClientRequest::Pull { gid, after, limit } => self.pull(id, gid, after, limit, conn),
            ClientRequest::Sync(request) => self.sync(id, kind, request, conn),
            ClientRequest::Online { gid } => self.online(id, gid, conn),
            ClientRequest::Signal { gid, kind } => self.signal(id, gid, kind, conn),
            ClientRequest::Read { gid, msgid } => self.mark_read(id, gid, msgid, conn),
            ClientRequest::Recall { gid, msgid } => self.recall(id, gid, msgid, conn),
        }
    }

    fn recall(&mut self, id: Option<RequestId>, gid: u64, msgid: u64, conn: &mut impl Connection) {
        if !self.begin_in_flight(id.clone(), RequestKind::Recall, conn) {
            return;
        }
        let (shared, uid) = (self.shared.clone(), self.uid());
        conn.spawn(self.work(async move {
            let outcome = super::recall(&shared, gid, msgid, Some(uid)).await;
            Outcome::Recalled {
                id,
                gid,
                msgid,
                outcome,
            }
        }));
    }

    fn signal(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        kind: SignalKind,
        conn: &mut impl Connection,
    ) {
        if !self.begin_in_flight(id.clone(), RequestKind::Signal, conn) {
            return;
        }
        let relay = Relay {
            from: self.uid(),
            session: self.id,
            kind,
        };
        let relaying = self.ask_group(gid, relay);
        conn.spawn(self.work(async move {
            let outcome = relaying.await.and_then(|relayed| relayed);
            Outcome::Quiet { id, outcome }
        }));
    }

    /// Moves the member's read position. Unlike acks, reads are not coalesced here: a client
    /// marks read as the user reads, far less often than messages arrive.
    fn mark_read(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        msgid: u64,
        conn: &mut impl Connection,
    ) {
        if !self.begin_in_flight(id.clone(), RequestKind::MarkRead, conn) {
            return;
        }
        let read = AckUpTo {
            uid: self.uid(),
            msgid,
            mark: Mark::Read,
        };
        let marking = self.ask_group(gid, read);
        conn.spawn(self.work(async move {
            let outcome = marking.await.and_then(|marked| marked);
            Outcome::Quiet { id, outcome }
        }));
    }

    fn online(&mut self, id: Option<RequestId>, gid: u64, conn: &mut impl Connection) {
        if !self.begin_in_flight(id.clone(), RequestKind::Read, conn) {
            return;
        }
        let online = OnlineIn {
            uid: self.uid(),
            session: Some(self.id),
        };
        let asking = self.ask_group(gid, online);
        conn.spawn(self.work(async move {
            let uids = asking.await.and_then(|online| online);
            Outcome::Online { id, gid, uids }
        }));
    }

    fn send(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        cmid: String,
        body: Box<serde_json::value::RawValue>,
        conn: &mut impl Connection,
    ) {
        if !self.begin_in_flight(id.clone(), RequestKind::Send, conn) {
            return;
        }
        let submit = Submit {
            author: Author::Member(self.uid()),
            cmid,
            body,
        };
        let submitted = self.ask_group(gid, submit);
        conn.spawn(self.work(async move {
            let sent = submitted.await.and_then(|committed| committed);
            Outcome::Sent { id, gid, sent }
        }));
    }

    fn sent(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        sent: Result<Appended, ApiError>,
        conn: &mut impl Connection,
    ) {
        self.in_flight -= 1;
        let reply = sent.map(|sent| ServerFrame::Sent {
            id: id.clone(),
            gid,
            msgid: sent.msgid,
            ts: sent.ts,
            dup: sent.dup,
        });
        self.answer(id, reply, conn);
    }

    /// Takes an ack. Only the highest of each group matters (acks are cumulative): one
    /// above everything known is forwarded when none of the group's is on its way, else it
    /// waits as the group's next; anything lower is already covered and costs nothing more.
    fn ack(&mut self, id: Option<RequestId>, gid: u64, msgid: u64, conn: &mut impl Connection) {
        let state = self.acks.get(&gid);
        if state.is_some_and(|state| msgid <= state.highest()) {
            return;
        }
        if let Some(state) = self.acks.get_mut(&gid).filter(|state| state.on_its_way) {
            state.next = Some((msgid, id));
            return;
        }
        // A new ack on its way: the first of a group not seen yet takes a place in flight
        // before any state is kept for it, so acks to ever new gids are bounded too.
        if !self.begin_in_flight(id.clone(), RequestKind::Ack, conn) {
            return;
        }
        self.forward_ack(gid, msgid, id, conn);
    }

    /// Hands the ack to its group; the outcome comes back to `acked`.
    fn forward_ack(
        &mut self,
        gid: u64,
        msgid: u64,
        id: Option<RequestId>,
        conn: &mut impl Connection,
    ) {
        let state = self.acks.entry(gid).or_default();
        state.on_its_way = true;
        state.forwarded = (msgid, id);
        let ack = AckUpTo {
            uid: self.uid(),
            msgid,
            mark: Mark::Received,
        };
        let acking = self.ask_group(gid, ack);
        conn.spawn(self.work(async move {
            let outcome = acking.await.and_then(|accepted| accepted);
            Outcome::Acked { gid, outcome }
        }));
    }

    /// The group answered the ack on its way: a refusal is written (and counts as a bad
    /// frame), and the group's next ack, if one came meanwhile, goes on its way.
    fn acked(&mut self, gid: u64, outcome: Result<(), ApiError>, conn: &mut impl Connection) {
        self.in_flight -= 1;
        let Some(state) = self.acks.get_mut(&gid) else {
            return;
        };
        state.on_its_way = false;
        let (msgid, id) = std::mem::take(&mut state.forwarded);
        match outcome {
            Ok(()) => state.accepted = state.accepted.max(msgid),
            Err(error) => self.answer(id, Err(error), conn),
        }
        let Some(state) = self.acks.get_mut(&gid) else {
            return;
        };
        match state.next.take() {
            Some((next, id)) if next > state.accepted => {
                self.in_flight += 1;
                self.forward_ack(gid, next, id, conn);
            }
            // Nothing waits: a group the session is not online in keeps no state.
            _ if !self.groups.contains_key(&gid) => {
                self.acks.remove(&gid);
            }
            _ => {}
        }
    }

    fn pull(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        after: u64,
        limit: u32,
        conn: &mut impl Connection,
    ) {
        if !self.begin_in_flight(id.clone(), RequestKind::Pull { limit }, conn) {
            return;
        }
        let (store, uid, turn) = (self.shared.store.clone(), self.uid(), self.read_turn());
        conn.spawn(self.work(async move {
            let _turn = turn.acquire().await.expect("the semaphore is never closed");
            let page = pull_page(&store, gid, uid, after, limit).await;
            Outcome::Pulled { id, gid, page }
        }));
    }

    fn pulled(
        &mut self,
        id: Option<RequestId>,
        gid: u64,
        page: Result<Page, ApiError>,
        conn: &mut impl Connection,
    ) {
        self.in_flight -= 1;
        let reply = page.as_ref().map(|page| ServerFrame::Msgs {
            id: id.clone(),
            gid,
            msgs: &page.msgs,
            more: page.more,
            first: page.first,
        });
        self.answer(id, reply.map_err(Clone::clone), conn);
    }

    fn sync(
        &mut self,
        id: Option<RequestId>,
        kind: RequestKind,
        request: SyncRequest,
        conn: &mut impl Connection,
    ) {
        if !self.begin_in_flight(id.clone(), kind, conn) {
            return;
        }
        let (store, uid, turn) = (self.shared.store.clone(), self.uid(), self.read_turn());
        conn.spawn(self.work(async move {
            let _turn = turn.acquire().await.expect("the semaphore is never closed");
            let reply = store.sync(uid, &request).await;
            let reply = reply.map(Box::new).map_err(ApiError::from);
            Outcome::Synced { id, reply }
        }));
    }

    fn synced(
        &mut self,
        id: Option<RequestId>,
        reply: Result<Box<SyncReply>, ApiError>,
        conn: &mut impl Connection,
    ) {
        self.in_flight -= 1;
        let reply = reply.as_deref().map(|reply| ServerFrame::Synced {
            id: id.clone(),
            reply,
        });
        self.answer(id, reply.map_err(Clone::clone), conn);
    }

    /// Gathers a notice into the session's next `sync_notify`, written `NOTIFY_WINDOW` after
    /// the first notice it holds.
    fn notify(&mut self, notice: &SyncNotice, conn: &mut impl Connection) {
        match self.notice.as_mut() {
            Some(pending) => pending.merge(notice),
            None => {
                self.notice = Some(Box::new(notice.clone()));
                conn.after(NOTIFY_WINDOW, Outcome::NoticeDue);
            }
        }
    }
}

/// The acks of one group, as the session keeps them.
#[derive(Default)]
struct AckState {
    /// The highest msgid the group accepted from this session.
    accepted: u64,
    /// Whether an ack is on its way to the group; then `forwarded` is it.
    on_its_way: bool,
    forwarded: (u64, Option<RequestId>),
    /// The highest ack that came while one was on its way, forwarded when it is answered.
    next: Option<(u64, Option<RequestId>)>,
}

impl AckState {
    /// The highest msgid accepted or on its way: acks at or below it add nothing.
    fn highest(&self) -> u64 {
        let on_its_way = if self.on_its_way { self.forwarded.0 } else { 0 };
        let next = self.next.as_ref().map_or(0, |(msgid, _)| *msgid);
        self.accepted.max(on_its_way).max(next)
    }

    /// The ack a session closing now still owes its group, if any.
    fn unanswered(&self) -> Option<u64> {
        Some(self.highest()).filter(|&msgid| msgid > self.accepted)
    }
}

/// What a decoded request costs.
fn kind_of(request: &ClientRequest) -> RequestKind {
    match request {
        ClientRequest::Ping => RequestKind::Ping,
        ClientRequest::Ack { .. } => RequestKind::Ack,
        ClientRequest::Send { .. } => RequestKind::Send,
        ClientRequest::Pull { limit, .. } => RequestKind::Pull { limit: *limit },
        ClientRequest::Sync(sync) => RequestKind::sync(sync),
        ClientRequest::Online { .. } => RequestKind::Read,
        ClientRequest::Signal { .. } => RequestKind::Signal,
        ClientRequest::Read { .. } => RequestKind::MarkRead,
        ClientRequest::Recall { .. } => RequestKind::Recall,
    }
}

// ---- request service: what a session asks of the directory, groups and storage ----

/// Joins every group the store says the user belongs to, with the member's cursor in each.
async fn join_groups(
    store: Store,
    directory: Addr<Directory>,
    session: SessionHandle,
) -> Result<Vec<(GroupCursor, GroupHandle)>, ApiError> {
    let stored = store.user_groups(session.uid).await?;
    let joins = stored
        .into_iter()
        .map(|stored| join_group(directory.clone(), session.clone(), stored));
    let joined = try_join_all(joins).await?;
    Ok(joined.into_iter().flatten().collect())
}

/// Joins one group the store says the user belongs to. `None` when the user left it (or it
/// is gone) since the store was read; an error when the group cannot be loaded.
async fn join_group(
    directory: Addr<Directory>,
    session: SessionHandle,
    stored: GroupCursor,
) -> Result<Option<(GroupCursor, GroupHandle)>, ApiError> {
    // A group actor that stops just as we ask is replaced by the directory: ask once more.
    for _ in 0..2 {
        let group = directory.send(GroupFor(stored.gid)).await?;
        let join = Join {
            session: session.clone(),
            stored_latest: stored.latest,
        };
        match group.ask(join).await {
            // `latest` is what the group had pushed when the session joined, not what the
            // store held: pushes to the session begin right after it, so what the client
            // pulls up to it and what it is pushed meet with no gap and no overlap. Where the
            // store is ahead (a node filling a gap), the group pushes the rest.
            Ok(Ok(live)) => {
                let cursor = GroupCursor {
                    latest: live.latest,
                    ..stored.merge(Some(live))
                };
                return Ok(Some((cursor, group)));
            }
            Ok(Err(refused))
                if matches!(refused.code, ErrorCode::Forbidden | ErrorCode::NotFound) =>
            {
                return Ok(None)
            }
            Ok(Err(error)) => return Err(error),
            Err(_stopped) => continue,
        }
    }
    Err(ApiError::unavailable())
}

/// A page of a group's messages for a member.
pub async fn pull_page(
    store: &Store,
    gid: u64,
    uid: u64,
    after: u64,
    limit: u32,
) -> Result<Page, ApiError> {
    let (membership, page) = store.messages_after(gid, uid, after, limit).await?;
    match membership {
        Membership::Member => Ok(page),
        Membership::NotMember => Err(Refusal::NotMember { gid }.into()),
        Membership::NoSuchGroup => Err(Refusal::GroupMissing { gid }.into()),
    }
}
